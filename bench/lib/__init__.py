"""The modules of bench/bench.py: processes, systems under test, sipp load, report."""
