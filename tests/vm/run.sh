#!/usr/bin/env bash
# run.sh KERNEL_IMAGE INITRAMFS [TIMEOUT_SECONDS]
#
# Boots KERNEL_IMAGE with INITRAMFS under software emulation (TCG; KVM guests crash on
# this machine) with no network device at all, and prints the serial console on stdout.
# Exits with qemu's status, or 124 when TIMEOUT_SECONDS (default 600) ran out.
# NT_VM_SMP (default 2) and NT_VM_MEM (default 1024) size the guest. NT_VM_ACCEL (default
# tcg,thread=single) is QEMU's accelerator: one host thread runs all vCPUs in turn. With one
# thread per vCPU (thread=multi) a 6.12 guest once died of `Oops: int3` in the middle of a
# static-key text patch (netif_rx_internal), which looks like TCG's cross-modifying-code
# handling; single-threaded TCG also boots the two bench guests faster on a 2-core host
# (the whole VM bench 162 s instead of 211-270 s).
set -euo pipefail

kernel="${1:?usage: run.sh KERNEL_IMAGE INITRAMFS [TIMEOUT]}"
initrd="${2:?usage: run.sh KERNEL_IMAGE INITRAMFS [TIMEOUT]}"
timeout_s="${3:-600}"

command -v qemu-system-x86_64 >/dev/null \
    || { echo "run.sh: qemu-system-x86_64 not found (apt-get install qemu-system-x86)" >&2; exit 127; }

exec timeout --signal=KILL "$timeout_s" qemu-system-x86_64 \
    -accel "${NT_VM_ACCEL:-tcg,thread=single}" -cpu max -m "${NT_VM_MEM:-1024}" -smp "${NT_VM_SMP:-2}" \
    -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet ${NT_VM_APPEND:-}" </dev/null
