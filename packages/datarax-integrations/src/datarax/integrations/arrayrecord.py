"""Random-access sources over ArrayRecord files, and a writer for them.

- :class:`ArrayRecordSource` reads records on demand from one or more ArrayRecord
  files, inside compiled code (``Pipeline.scan``, ``jax.jit``) through a host
  callback, in natural or shuffled order.
- :func:`write_array_record` writes dict records in a fixed binary layout that
  :class:`ArrayRecordSource` decodes without a Python loop per record. Files
  written another way are read with ``decode=``.
- :class:`ArrayRecordRecords` serves the raw records as host records, for a
  :class:`~datarax.sources.HostMapSource` that decodes them on worker threads or
  processes.

Needs the ``[arrayrecord]`` extra: ``pip install "datarax-integrations[arrayrecord]"``.
"""

from datarax.integrations._extras import require

require("arrayrecord", "array_record")

from datarax.integrations._arrayrecord_records import (  # noqa: E402 (after the guard)
    ArrayRecordRecords as ArrayRecordRecords,
)
from datarax.integrations._arrayrecord_source import (  # noqa: E402
    ArrayRecordSource as ArrayRecordSource,
    write_array_record as write_array_record,
)

__all__ = ["ArrayRecordRecords", "ArrayRecordSource", "write_array_record"]
