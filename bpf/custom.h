/* Generic probe for user-declared metrics (src/collectors/custom/). */
#ifndef KERNSCOPE_CUSTOM_H
#define KERNSCOPE_CUSTOM_H

#define CUSTOM_SLOTS 4
#define CUSTOM_METRICS 8
#define CUSTOM_BOUNDS 32
#define CUSTOM_STR 32

enum ks_slot_kind {
	KS_SLOT_NONE = 0,
	KS_SLOT_ARG = 1,	  /* the argument itself */
	KS_SLOT_ARG_DEREF = 2,	  /* user memory at argument + offset */
	KS_SLOT_FIELD = 3,	  /* tracepoint field at ctx + offset */
	KS_SLOT_STR_USER = 4,	  /* user string the argument points to */
	KS_SLOT_STR_FIELD = 5,	  /* tracepoint char array at ctx + offset */
	KS_SLOT_STR_DATALOC = 6,  /* tracepoint __data_loc string */
};

/* Where a value comes from. */
struct ks_slot {
	__u8 kind;
	__u8 arg;
	__u8 size;	/* 1, 2, 4 or 8; for strings the bytes kept */
	__u8 is_signed;
	__u32 offset;
};

/* Sources of a metric's value, label and filter: slots 1..4, then these. */
enum ks_src { KS_SRC_NONE = 0, KS_SRC_SLOT0 = 1, KS_SRC_RET = 5, KS_SRC_DURATION = 6, KS_SRC_STR = 7 };

enum ks_op { KS_OP_NONE = 0, KS_OP_EQ = 1, KS_OP_NE = 2, KS_OP_LT = 3, KS_OP_LE = 4, KS_OP_GT = 5, KS_OP_GE = 6 };

enum ks_buckets { KS_BUCKETS_NONE = 0, KS_BUCKETS_EXPLICIT = 1, KS_BUCKETS_LOG2 = 2 };

/* One declared metric; every metric of a probe shares its hook. */
struct ks_metric {
	__u8 value_src;
	__u8 label_src;
	__u8 filter_src;
	__u8 filter_op;
	__u8 bucket_mode;
	__u8 nbounds;
	__u8 needs_return;	/* uses ret or duration: counted at the end */
	__u8 label_str;		/* the string read is a label too */
	__u8 label2_src;	/* a second number as a label */
	__u8 pad[7];
	__s64 filter_val;
	__s64 bounds[CUSTOM_BOUNDS];
};

struct ks_agg_key {
	__u64 label;
	__u64 label2;
	__u32 bucket;
	__u32 metric;
	char str[CUSTOM_STR];	/* a string label; zeroed otherwise */
};

struct ks_agg_value {
	__u64 count;
	__s64 sum;
	__s64 last;		/* gauges */
};

enum ks_custom_drop { CUSTOM_DROP_AGG_FULL = 0, CUSTOM_DROP_PENDING_FULL = 1 };

#endif
