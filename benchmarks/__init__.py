"""sheepfast's benchmark harness: ``python -m benchmarks --help`` (or
``sheepfast bench``) from a source checkout. See benchmarks/README.md."""
