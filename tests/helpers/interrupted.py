"""A training loop over host-staged images, run as a script and stopped by Ctrl-C.

``python interrupted.py FOLDER`` iterates a shuffled pipeline whose host stages run
in worker processes (and whose batches are prefetched by a thread) without end,
printing ``ready PID...`` (its worker processes) once batches flow. The test sends
SIGINT to its process group, as a terminal's Ctrl-C does. SIGUSR1 prints every
thread's stack to stderr (faulthandler), for a test that finds it still running.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import time

import hostfns
import psutil

from datarax import Pipeline
from datarax.operators import HostOperator
from datarax.sources import HostMapSource, ImageFolderSource


def main(folder: str) -> None:
    stages = [
        HostOperator(hostfns.decode),
        HostOperator(hostfns.random_crop, stochastic=True),
    ]
    source = HostMapSource(ImageFolderSource(folder), stages, workers=2, processes=True)
    pipe = Pipeline(
        source=source, batch_size=4, shuffle=True, num_epochs=None, prefetch=2
    )
    for step, _ in enumerate(pipe):
        if step == 3:
            children = psutil.Process().children(recursive=True)
            print("ready", *(child.pid for child in children), flush=True)
        time.sleep(0.01)


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    main(sys.argv[1])
