// SPDX-License-Identifier: GPL-2.0
/*
 * vmm_selftest: a small KUnit suite built into the vmm test guest kernel.
 *
 * It exists so that the VMM's test harness can check, end to end, that an
 * in-kernel test run is started (kunit.enable=1), that its KTAP output
 * reaches the serial console, that passes are reported as passes and that a
 * failure is reported as a failure. The cases below therefore cover cheap
 * kernel facilities (they must finish quickly under an emulated CPL0) and
 * include exactly ONE case, vmm_selftest_deliberate_failure, that always
 * fails on purpose.
 *
 * Copied into lib/ of the kernel tree by scripts/guest-kernel/build.sh.
 * KTAP format: Documentation/dev-tools/ktap.rst.
 */
#include <kunit/test.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sort.h>
#include <linux/cpumask.h>

/* Plain arithmetic and the KUnit assertion plumbing itself. */
static void vmm_selftest_arith(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, 2 + 2, 4);
	KUNIT_EXPECT_EQ(test, DIV_ROUND_UP(10, 4), 3);
	KUNIT_EXPECT_EQ(test, roundup_pow_of_two(1000), 1024UL);
}

/* The slab allocator hands out zeroed, writable memory. */
static void vmm_selftest_kzalloc(struct kunit *test)
{
	size_t i;
	u8 *buf = kunit_kzalloc(test, 256, GFP_KERNEL);

	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, buf);
	for (i = 0; i < 256; i++)
		KUNIT_EXPECT_EQ(test, buf[i], 0);
	memset(buf, 0xa5, 256);
	KUNIT_EXPECT_EQ(test, buf[255], 0xa5);
}

static int vmm_cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* lib/sort.c on a tiny array. */
static void vmm_selftest_sort(struct kunit *test)
{
	int v[] = { 5, 3, 9, 1, 7 };
	int want[] = { 1, 3, 5, 7, 9 };

	sort(v, ARRAY_SIZE(v), sizeof(v[0]), vmm_cmp_int, NULL);
	KUNIT_EXPECT_EQ(test, memcmp(v, want, sizeof(v)), 0);
}

/* At least the boot CPU is online (SMP bring-up did not lose it). */
static void vmm_selftest_cpus(struct kunit *test)
{
	KUNIT_EXPECT_GE(test, num_online_cpus(), 1U);
	KUNIT_EXPECT_TRUE(test, cpu_online(0));
}

/*
 * Always fails, on purpose: a harness that runs this suite must report
 * exactly this case as "not ok" and the suite as failed. Do not "fix" it.
 */
static void vmm_selftest_deliberate_failure(struct kunit *test)
{
	KUNIT_FAIL(test, "deliberate failure: proves the harness reports failing cases");
}

static struct kunit_case vmm_selftest_cases[] = {
	KUNIT_CASE(vmm_selftest_arith),
	KUNIT_CASE(vmm_selftest_kzalloc),
	KUNIT_CASE(vmm_selftest_sort),
	KUNIT_CASE(vmm_selftest_cpus),
	KUNIT_CASE(vmm_selftest_deliberate_failure),
	{}
};

static struct kunit_suite vmm_selftest_suite = {
	.name = "vmm_selftest",
	.test_cases = vmm_selftest_cases,
};

kunit_test_suite(vmm_selftest_suite);

MODULE_DESCRIPTION("vmm guest self-test KUnit suite");
MODULE_LICENSE("GPL");
