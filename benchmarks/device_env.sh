# Source on a device-tool GPU machine (from the repository root) before running the benchmarks:
# installs the carried snakemake wheels (.whl, built by ../shared/device/wheels-for-device.sh)
# and puts this checkout on PYTHONPATH (the image's torch lives in its own venv).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
