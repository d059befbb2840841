/*
 * heapmark: a guest process for the attribution and virtual-scan tests. It grows its
 * heap (brk) by 64 pages, faults them in, and writes two markers there:
 *   - marker A inside one page (a physical scan finds it; it must be attributed to this
 *     pid at the printed virtual address);
 *   - marker B across the first heap page boundary whose right page is not the frame
 *     after the left one (read from /proc/self/pagemap): a physical scan cannot see it
 *     whole.
 * The markers are assembled byte by byte in place, so no whole copy exists anywhere
 * else in memory (not in the binary, not on the stack). It prints where they are and
 * sleeps forever. First it fragments free memory (fragment), for the test module
 * loaded after it.
 *
 * Usage: heapmark TAG   (markers: DOMAINM-A-<TAG>-<pid>-Q7XK2P, DOMAINM-B-<TAG>-<pid>-Q7XK2P)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 64
#define PG 4096UL

static uint64_t pagemap(int fd, uintptr_t va) {
	uint64_t e = 0;
	if (pread(fd, &e, 8, (off_t)(va / PG) * 8) != 8)
		return 0;
	return e;
}

/* put writes kind's marker at p, one byte at a time. */
static size_t put(volatile char *p, char kind, const char *tag) {
	char num[24];
	size_t n = 0;
	const char *parts[] = {"DOMAINM-", NULL, "-", tag, "-", num, "-Q7XK2P"};
	char k[2] = {kind, 0};
	parts[1] = k;
	snprintf(num, sizeof num, "%d", (int)getpid());
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		for (const char *c = parts[i]; *c; c++)
			p[n++] = *c;
	return n;
}

/* fragment leaves single free frames between allocated ones, so that what the kernel
 * allocates page by page next (the test module's memory) is not physically contiguous.
 * The module's pages are unmovable, and the kernel takes them from other page blocks
 * than user memory's: so two pipes (unmovable pages) are filled a page at a time,
 * alternately, and one is closed (its pages held until heapmark exits); anonymous
 * memory is fragmented too (16 MiB touched, every other page given back). */
static int pipes[2][2];

static void fragment(void) {
	static char buf[PG];
	int size = 4 << 20;
	memset(buf, 'p', sizeof buf);
	if (pipe(pipes[0]) == 0 && pipe(pipes[1]) == 0 && fcntl(pipes[0][1], F_SETPIPE_SZ, size) >= 0 &&
	    fcntl(pipes[1][1], F_SETPIPE_SZ, size) >= 0) {
		for (int i = 0; i < size / (int)PG; i++)
			if (write(pipes[0][1], buf, PG) != (ssize_t)PG || write(pipes[1][1], buf, PG) != (ssize_t)PG)
				break;
		close(pipes[1][0]);
		close(pipes[1][1]);
	}
	size_t n = 4096;
	char *m = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return;
	madvise(m, n * PG, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < n; i++)
		m[i * PG] = 'f';
	for (size_t i = 1; i < n; i += 2)
		madvise(m + i * PG, PG, MADV_DONTNEED);
}

int main(int argc, char **argv) {
	const char *tag = argc > 1 ? argv[1] : "T";
	fragment();
	char *base = sbrk(0);
	char *heap = (char *)(((uintptr_t)base + PG - 1) & ~(PG - 1));
	if (sbrk((heap - base) + PAGES * PG) == (void *)-1) {
		perror("sbrk");
		return 1;
	}
	madvise(heap, PAGES * PG, MADV_NOHUGEPAGE);
	/* Fault the pages in from the last to the first, so that the allocator's run of
	 * free frames, if it hands them out in order, lands backwards in the heap. */
	for (int i = PAGES - 1; i >= 0; i--)
		heap[i * PG + 1] = 'h'; /* not zero */
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0) {
		perror("pagemap");
		return 1;
	}
	int split = -1;
	for (int i = 2; i + 1 < PAGES; i++) {
		uint64_t a = pagemap(fd, (uintptr_t)heap + i * PG), b = pagemap(fd, (uintptr_t)heap + (i + 1) * PG);
		uint64_t pa = a & ((1ULL << 55) - 1), pb = b & ((1ULL << 55) - 1);
		if (a >> 63 && b >> 63 && pb != pa + 1) {
			split = i;
			break;
		}
	}
	if (split < 0) {
		printf("HEAPMARK-FAILED no physically non-adjacent heap pages\n");
		return 1;
	}
	uintptr_t va = (uintptr_t)heap + 100;
	size_t alen = put(heap + 100, 'A', tag);
	uintptr_t vb = (uintptr_t)heap + (split + 1) * PG - 9;
	size_t blen = put(heap + (split + 1) * PG - 9, 'B', tag);
	printf("HEAPMARK pid=%d a=%#lx alen=%zu b=%#lx blen=%zu pmA=%#llx pmB0=%#llx pmB1=%#llx\n", (int)getpid(),
	       (unsigned long)va, alen, (unsigned long)vb, blen,
	       (unsigned long long)pagemap(fd, va), (unsigned long long)pagemap(fd, vb), (unsigned long long)pagemap(fd, vb + blen - 1));
	fflush(stdout);
	for (;;)
		pause();
}
