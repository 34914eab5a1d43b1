"""Command-line tools of the runtime: ``clipxai-segment`` and ``clipxai-cache`` (thin: parse, then call)."""
