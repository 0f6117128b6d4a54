// SPDX-License-Identifier: GPL-2.0
/* Loaded alone by the doctor: BPF trampolines may be refused by the kernel. */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/do_nanosleep")
int BPF_PROG(probe_fentry) { return 0; }
