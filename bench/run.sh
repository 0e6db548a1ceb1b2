#!/usr/bin/env bash
# portico's benchmark harness: installs the peers (HAProxy, nginx with its
# stream module, ActiveMQ, iperf3) from Debian's packages, builds portico in
# release mode, and runs bench/run.py, which writes bench/results.md.
# Arguments go to bench/run.py (`bench/run.sh --help`, `bench/run.sh --quick`).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(haproxy nginx-light libnginx-mod-stream activemq libmqtt-client-java mosquitto iperf3 openssl python3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" default-jre-headless
fi
# The packages' own services are not what is measured; the harness starts
# its own instances on free loopback ports.

cargo build --release -p portico -p portico-broker -p portico-loadgen

# Thousands of idle connections need as many descriptors in each process.
ulimit -n "$(ulimit -Hn)"
exec python3 bench/run.py "$@"
