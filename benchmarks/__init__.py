"""sheepfast's benchmark harness: ``python -m benchmarks --help`` from a
source checkout. See benchmarks/README.md."""
