"""openwit's data pipeline: crawl records to curated, deduplicated training shards.

One module per stage; the synthetic crawl used by tests, benchmarks and the demo lives in
``pipeline.synth``.
"""

import logging
import os

# albumentations (imported by img2dataset) otherwise asks the package index for a newer
# version on every import, in every worker process.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class _DropKnownNoise(logging.Filter):
    """Beam warns on import that optional Google Cloud client libraries are missing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_DropKnownNoise())
