// SPDX-License-Identifier: GPL-2.0
/*
 * vmark: a test module for the virtual-scan test. It writes a marker into its own
 * memory (its .bss, which the kernel allocates page by page in the module area)
 * across the first page boundary whose two pages are not physically adjacent or, when
 * there is none, across such a boundary of pages it maps into the vmalloc area
 * (vmark_vmap), and prints where (virtual address, both page frames, which area) to
 * the kernel log. The marker
 * is assembled at load time from the tag parameter, so the .ko holds no copy of it.
 *
 * Marker: DOMAINM-K-<tag>-Q7XK2P
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/vmalloc.h>

#define VMARK_PAGES 8

static char vmark_buf[VMARK_PAGES * PAGE_SIZE] __aligned(PAGE_SIZE);
static char *tag = "T";
module_param(tag, charp, 0);

static size_t vmark_put(volatile char *p)
{
	const char *parts[] = {"DOMAINM-", "K-", tag, "-Q7XK2P"};
	size_t n = 0, i;
	const char *c;

	for (i = 0; i < ARRAY_SIZE(parts); i++)
		for (c = parts[i]; *c; c++)
			p[n++] = *c;
	return n;
}

static struct page *vmark_pages[VMARK_PAGES];
static void *vmark_area;

/* vmark_vmap is the fallback when the module's own pages came out contiguous (a fresh
 * guest often hands them out in order): it maps VMARK_PAGES pages of its own into the
 * vmalloc area out of allocation order and writes the marker there. noinline
 * and not __init, so that the area's caller (vm_struct.caller) stays in module text. */
static noinline int vmark_vmap(void)
{
	int i;

	/* Allocation order 0 2 4 6 1 3 5 7 along the area: however the allocator orders
	 * the frames it hands out, neighbours are two allocations apart. */
	static const int perm[VMARK_PAGES] = {0, 4, 1, 5, 2, 6, 3, 7};

	for (i = 0; i < VMARK_PAGES; i++) {
		vmark_pages[perm[i]] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!vmark_pages[perm[i]])
			return -ENOMEM;
	}
	vmark_area = vmap(vmark_pages, VMARK_PAGES, VM_MAP, PAGE_KERNEL);
	if (!vmark_area)
		return -ENOMEM;
	for (i = 0; i + 1 < VMARK_PAGES; i++) {
		char *page = (char *)vmark_area + i * PAGE_SIZE;
		unsigned long a = vmalloc_to_pfn(page), b = vmalloc_to_pfn(page + PAGE_SIZE);
		char *p = page + PAGE_SIZE - 9;
		size_t n;

		page[100] = 'v';
		page[PAGE_SIZE + 100] = 'v';
		if (b == a + 1)
			continue;
		n = vmark_put(p);
		pr_err("VMARK va=%px len=%zu pfn0=%lx pfn1=%lx in=vmalloc\n", p, n, a, b);
		return 0;
	}
	pr_err("VMARK-ADJACENT all pages are physically adjacent\n");
	return 0;
}

static int __init vmark_init(void)
{
	int i;

	for (i = 0; i < VMARK_PAGES; i++)
		vmark_buf[i * PAGE_SIZE + 100] = 'v'; /* not zero */
	for (i = 1; i + 1 < VMARK_PAGES; i++) {
		char *page = vmark_buf + i * PAGE_SIZE;
		unsigned long a = vmalloc_to_pfn(page), b = vmalloc_to_pfn(page + PAGE_SIZE);
		char *p = page + PAGE_SIZE - 9;
		size_t n;

		if (b == a + 1)
			continue;
		n = vmark_put(p);
		pr_err("VMARK va=%px len=%zu pfn0=%lx pfn1=%lx in=module\n", p, n, a, b);
		return 0;
	}
	return vmark_vmap();
}

static void __exit vmark_exit(void)
{
	int i;

	if (vmark_area)
		vunmap(vmark_area);
	for (i = 0; i < VMARK_PAGES; i++)
		if (vmark_pages[i])
			__free_page(vmark_pages[i]);
}

module_init(vmark_init);
module_exit(vmark_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Domain M test: a marker across a page boundary of module memory");
