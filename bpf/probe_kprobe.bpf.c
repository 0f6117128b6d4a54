// SPDX-License-Identifier: GPL-2.0
/* Loaded and attached alone by the doctor: kprobes may be compiled out. */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe/do_nanosleep")
int probe_kprobe(void *ctx) { return 0; }
