/* Generic probe for user-declared metrics (src/collectors/custom/). */
#ifndef KERNSCOPE_CUSTOM_H
#define KERNSCOPE_CUSTOM_H

#define CUSTOM_SLOTS 4
#define CUSTOM_BOUNDS 32

enum ks_slot_kind { KS_SLOT_NONE = 0, KS_SLOT_ARG = 1, KS_SLOT_ARG_DEREF = 2 };

/* Where a value comes from: argument `arg`, or the `size` bytes at
 * `offset` in the memory argument `arg` points to. */
struct ks_slot {
	__u8 kind;
	__u8 arg;
	__u8 size;	/* 1, 2, 4 or 8 */
	__u8 is_signed;
	__u32 offset;
};

/* Sources of a metric's value, label and filter. */
enum ks_src { KS_SRC_NONE = 0, KS_SRC_SLOT0 = 1, KS_SRC_RET = 5, KS_SRC_DURATION = 6 };

enum ks_op { KS_OP_NONE = 0, KS_OP_EQ = 1, KS_OP_NE = 2, KS_OP_LT = 3, KS_OP_LE = 4, KS_OP_GT = 5, KS_OP_GE = 6 };

enum ks_buckets { KS_BUCKETS_NONE = 0, KS_BUCKETS_EXPLICIT = 1, KS_BUCKETS_LOG2 = 2 };

struct ks_agg_key {
	__u64 label;
	__u32 bucket;
	__u32 pad;
};

struct ks_agg_value {
	__u64 count;
	__s64 sum;
};

enum ks_custom_drop { CUSTOM_DROP_AGG_FULL = 0, CUSTOM_DROP_PENDING_FULL = 1 };

#endif
