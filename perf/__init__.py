"""numconv's benchmark: the shape suite, the harness and the chart (``make perf``)."""
