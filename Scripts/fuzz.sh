#!/usr/bin/env bash
# Builds the libFuzzer harnesses (Fuzz/*) with -sanitize=fuzzer,address and runs each for N seconds
# (first argument, default 180), one after another. Seed corpora are made at run time from the
# test vectors (Tests/VXLANCodecTests/Vectors/*.pcap, Tests/GossipTests/SerfVectors.swift) plus the
# small seeds under Fuzz/<name>/seeds/. Everything written goes under .build-fuzz/ (git-ignored).
# Usage: Scripts/fuzz.sh [SECONDS] [HARNESS...]   (harnesses: fuzz-vxlan fuzz-gossip fuzz-model fuzz-dns fuzz-esp fuzz-rx fuzz-docker fuzz-api fuzz-records fuzz-cni)
# Exit status: 0 when no harness found a crash, 1 otherwise (inputs in .build-fuzz/crashes/; not artifacts/, which
# SwiftPM owns in a scratch path and empties when another harness is built).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-180}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && harnesses=(fuzz-vxlan fuzz-gossip fuzz-model fuzz-dns fuzz-esp fuzz-rx fuzz-docker fuzz-api fuzz-records fuzz-cni)
scratch=.build-fuzz
flags=(-Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING)

seed_dir() {  # harness -> directory under Fuzz/
    case "$1" in fuzz-vxlan) echo Fuzz/VXLAN/seeds ;; fuzz-gossip) echo Fuzz/Gossip/seeds ;; fuzz-model) echo Fuzz/Model/seeds ;; fuzz-dns) echo Fuzz/DNS/seeds ;; fuzz-esp) echo Fuzz/ESP/seeds ;; fuzz-rx) echo Fuzz/RX/seeds ;; fuzz-docker) echo Fuzz/Docker/seeds ;; fuzz-api) echo Fuzz/API/seeds ;; fuzz-records) echo Fuzz/Records/seeds ;; fuzz-cni) echo Fuzz/CNI/seeds ;; esac
}

make_seeds() {  # harness corpus-dir
    local name="$1" out="$2"
    mkdir -p "$out"
    cp "$(seed_dir "$name")"/* "$out"/ 2>/dev/null || true
    case "$name" in
    fuzz-vxlan)
        python3 - "$out" Tests/VXLANCodecTests/Vectors/*.pcap <<'PY'
import struct, sys
out, files = sys.argv[1], sys.argv[2:]
n = 0
def put(b):
    global n
    with open(f"{out}/pcap-{n:03d}", "wb") as f: f.write(b)
    n += 1
for path in files:
    data = open(path, "rb").read()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        rec = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype != 1 or len(rec) < 14: continue
        ip = rec[14:]
        put(rec)   # Ethernet frame (readEthernetFrame)
        put(ip)    # outer IP packet (decapsulate(packet:), readIPv4/6Packet)
        v = ip[0] >> 4
        hl = (ip[0] & 15) * 4 if v == 4 else 40
        if len(ip) > hl + 8: put(ip[hl + 8:])  # UDP payload (decapsulate(udpPayload:))
PY
        ;;
    fuzz-gossip)
        python3 - "$out" Tests/GossipTests/SerfVectors.swift <<'PY'
import re, sys
out, src = sys.argv[1], sys.argv[2]
for i, h in enumerate(re.findall(r'hex: "([0-9a-f]+)"', open(src).read())):
    with open(f"{out}/serf-{i:03d}", "wb") as f: f.write(bytes.fromhex(h))
PY
        ;;
    esac
}

status=0
for name in "${harnesses[@]}"; do
    echo "== building $name"
    swift build --product "$name" --scratch-path "$scratch" "${flags[@]}" 2>&1 | grep -v "Cannot export local symbol" | tail -3
    corpus="$scratch/corpus/$name"
    artifacts="$scratch/crashes/$name"
    mkdir -p "$artifacts"
    make_seeds "$name" "$corpus"
    log="$scratch/$name.log"
    echo "== running $name for ${seconds}s (corpus $corpus, $(ls "$corpus" | wc -l) files)"
    set +e
    # SWIFT_BACKTRACE off: libFuzzer reports the crash; Swift's backtracer reading the crashed
    # process's memory would only add an AddressSanitizer report of its own.
    SWIFT_BACKTRACE=enable=no "$scratch/debug/$name" "$corpus" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb" "$log" || true
    if [ $rc -ne 0 ]; then
        status=1
        echo "!! $name exited with $rc; log $log; crash inputs:"
        ls -l "$artifacts"
        grep -E "ERROR: |Fatal error|SUMMARY" "$log" | head -5 || true
    else
        echo "== $name: no crash"
    fi
done
exit $status
