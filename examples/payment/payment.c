/* The payment service of the custom-metrics example: process_payment() is
 * called once per line of stdin ("<amount> <currency>"), and returns 0 when
 * the payment goes through, 2 when it is declined (amounts over 1000). No
 * line of it knows about Kernscope. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct payment {
	uint64_t id;
	uint64_t amount;	/* whole dollars */
	uint32_t currency;
};

__attribute__((noinline)) int process_payment(struct payment *p)
{
	__asm__ volatile("" ::: "memory"); /* a real function, not folded away */
	return p->amount > 1000 ? 2 : 0;
}

/* `payment --bench N`: N calls in a loop, prints ns per call (for bench/). */
static int bench(long n)
{
	struct payment p = { .amount = 500 };
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		p.amount = i % 2000;
		process_payment(&p);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--bench"))
		return bench(atol(argv[2]));
	struct payment p = { 0 };
	unsigned long long amount;
	unsigned currency;
	printf("ready\n");
	fflush(stdout);
	while (scanf("%llu %u", &amount, &currency) == 2) {
		p.id++;
		p.amount = amount;
		p.currency = currency;
		printf("%d\n", process_payment(&p));
		fflush(stdout);
	}
	return 0;
}
