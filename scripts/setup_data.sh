#!/usr/bin/env bash
# Materialise the pipeline's raw data, data/fashion-mnist/*-ubyte.gz, byte-identical to data.dvc.
# Sources, in order: the files already there; a local mirror (FCDD_FMNIST_MIRROR, default Debian's
# /usr/share/datasets/fashion-mnist, installed with apt-get when missing and allowed); `dvc pull`
# from a configured DVC remote. Every file is then checked against the md5 recorded below (the
# files data.dvc tracks; `dvc status data.dvc` says the same).
# Note: Zalando's original downloads hold the same images gzipped differently (other bytes), so
# they would not match data.dvc; use the Debian mirror or a DVC remote.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=data/fashion-mnist
MIRROR=${FCDD_FMNIST_MIRROR:-/usr/share/datasets/fashion-mnist}
DVC=${DVC:-.venv/bin/dvc}
declare -A MD5=(
  [train-images-idx3-ubyte.gz]=cf8536b0aa1a6ac5fa3f23001093305c
  [train-labels-idx1-ubyte.gz]=10bea18fdb374794d4bb42e356e600c9
  [t10k-images-idx3-ubyte.gz]=f78720b4224f21cce2f2ccf2d7a94c9a
  [t10k-labels-idx1-ubyte.gz]=0d30e22e447f3c33dab9ed536400ac01
)

all_present() {  # $1: folder
  local f
  for f in "${!MD5[@]}"; do [[ -f "$1/$f" ]] || return 1; done
}

verified() {  # $1: folder; silent md5 check of every file
  local f
  for f in "${!MD5[@]}"; do
    [[ -f "$1/$f" ]] && [[ "$(md5sum "$1/$f" | cut -d' ' -f1)" == "${MD5[$f]}" ]] || return 1
  done
}

install_mirror() {
  command -v apt-get >/dev/null || { echo "setup_data: no apt-get here" >&2; return 1; }
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo -n"
  echo "setup_data: apt-get update && apt-get install -y dataset-fashion-mnist"
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
}

if verified "$DEST"; then
  echo "setup_data: $DEST already matches data.dvc"
else
  if ! all_present "$MIRROR" && [[ "${FCDD_NO_APT:-0}" != 1 ]]; then
    install_mirror || echo "setup_data: could not install dataset-fashion-mnist" >&2
  fi
  if all_present "$MIRROR"; then
    mkdir -p "$DEST"
    for f in "${!MD5[@]}"; do cp "$MIRROR/$f" "$DEST/$f"; done
    echo "setup_data: copied Fashion-MNIST from $MIRROR"
  elif [[ -x "$DVC" ]] && "$DVC" remote list 2>/dev/null | grep -q .; then
    "$DVC" pull data.dvc
  fi
  for f in "${!MD5[@]}"; do
    if [[ ! -f "$DEST/$f" ]]; then
      echo "setup_data: $DEST/$f is missing: install dataset-fashion-mnist (apt-get), set" \
        "FCDD_FMNIST_MIRROR to a folder with the four files, or configure a DVC remote (README)" >&2
      exit 1
    fi
    got=$(md5sum "$DEST/$f" | cut -d' ' -f1)
    if [[ "$got" != "${MD5[$f]}" ]]; then
      echo "setup_data: $DEST/$f has md5 $got, data.dvc expects ${MD5[$f]}" \
        "(a different copy: get Debian's via apt-get or FCDD_FMNIST_MIRROR, or run dvc pull data.dvc)" >&2
      exit 1
    fi
  done
fi

# Put the files into the DVC cache too, so `dvc push` can share them (a no-op when cached).
if [[ -x "$DVC" ]]; then
  "$DVC" commit --force --quiet data.dvc
  "$DVC" status data.dvc
fi
