"""wanflow benchmarks: measured numbers, printed and written to bench/results/, never asserted in unit tests."""
