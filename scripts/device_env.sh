# Sourced from the repository root by the scripts run on a lent GPU machine (scripts/gpu_train.sh,
# benchmarks/device_check.sh): installs the wheels carried in .whl into /tmp/site and puts them
# and this checkout on PYTHONPATH. The machine has torch but not soundfile, av or norbert.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
