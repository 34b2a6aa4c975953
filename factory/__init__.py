"""CoT Factory: declarative recipes → clean, validated chain-of-thought training shards."""

__version__ = "0.1.0"
