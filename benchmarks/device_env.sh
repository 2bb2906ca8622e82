# Source on a device-tool GPU machine (from the repository root) before running the benchmarks:
# installs the carried snakemake wheels (.whl, built by ../shared/device/wheels-for-device.sh) into
# /tmp/site, and this project into the image's Python (its torch lives in its own venv; no network
# there, so no build isolation). Where that install is refused, the checkout is put on PYTHONPATH.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 || return 1
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/tmp/pip-install-e.log 2>&1; then
  echo "pip install -e . was refused (see /tmp/pip-install-e.log): using this checkout on PYTHONPATH"
  export PYTHONPATH=$PYTHONPATH:$PWD
fi
