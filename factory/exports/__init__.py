"""Training views of a run's rows, written under ``<out>/exports/<kind>/`` beside the shards:
``sft`` (TRL conversational / prompt-completion), ``dpo`` (TRL prompt / chosen / rejected) and
``selector`` (token windows with candidates). One exporter per file, registered by the name a
recipe uses in ``exports:``; each returns the files it wrote and a report for the manifest.
"""

from factory.exports.base import EXPORTERS, ExportContext, ExportFile, Exporter, write_exports  # noqa: F401
from factory.exports import dpo, selector, sft  # noqa: F401  (registration)
