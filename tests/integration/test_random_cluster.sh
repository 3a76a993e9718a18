#!/usr/bin/env bash
# The randomized differential test of test_random.py, every job through a
# coordinator and three worker processes (sluice submit --wait).
exec env THROUGH_CLUSTER=1 "$(dirname "$0")/test_random.py"
