"""Sources over HuggingFace ``datasets``, TFDS and ArrayRecord files.

Each backend is its own module behind its own extra, imported only when you import
it: ``datarax.integrations.hf`` (``pip install "datarax-integrations[hf]"``),
``datarax.integrations.tfds`` (``[tfds]``) and ``datarax.integrations.arrayrecord``
(``[arrayrecord]``). Importing this package imports none of them.
"""

__all__: list[str] = []
