"""What every ``scripts/bench_*.py`` shares: the benchmark networks and the harness (command echo,
chunk timing, report header and files, confidence intervals). Scripts import this, never each other."""
