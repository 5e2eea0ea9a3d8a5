"""Random-access sources over ArrayRecord files, and a writer for them.

- :class:`ArrayRecordSource` reads records on demand from one or more ArrayRecord
  files, inside compiled code (``Pipeline.scan``, ``jax.jit``) through a host
  callback, in natural or shuffled order.
- :func:`write_array_record` writes dict records in a fixed binary layout that
  :class:`ArrayRecordSource` decodes without a Python loop per record. Files
  written another way are read with ``decode=``.

Needs the ``[arrayrecord]`` extra: ``pip install "datarax-integrations[arrayrecord]"``.
"""

from datarax.integrations._extras import require

require("arrayrecord", "array_record")

from datarax.integrations._arrayrecord_source import (  # noqa: E402 (after the guard)
    ArrayRecordSource as ArrayRecordSource,
    write_array_record as write_array_record,
)

__all__ = ["ArrayRecordSource", "write_array_record"]
