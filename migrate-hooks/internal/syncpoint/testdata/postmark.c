/*
 * postmark: the guest program of the co-migration test with a Linux target
 * (linuxtarget_test.go). Markers are assembled byte by byte in place, so no whole
 * copy exists anywhere else in the guest's memory. Modes:
 *
 *   postmark frag
 *     Fragments the kernel's free unmovable memory, for the test module loaded next:
 *     fills two pipes (4 MiB each) a page at a time, alternately, then closes one, so
 *     that every other frame of what the pipes took is free again and what the kernel
 *     allocates page by page next (a module's memory) comes from frames two apart.
 *     (Freeing anonymous memory does not do it: those frames are movable, and the
 *     kernel takes unmovable allocations from other page blocks.) Prints FRAG and
 *     stays, holding the other pipe's pages.
 *
 *   postmark share TAG FILE
 *     Maps FILE (on tmpfs) shared, 64 pages, and writes DOMAINM-S-TAG-PID-Q7XK2P across
 *     the first page boundary whose frames are not adjacent (from /proc/self/pagemap).
 *     Prints SHARE pid= va= len= off= pm0= pm1= and stays.
 *
 *   postmark attach FILE OFF
 *     Maps FILE shared too, reads its pages, prints ATTACH pid= va= (the virtual
 *     address of byte OFF of the file here) and stays.
 *
 *   postmark post TAG
 *     Picks a heap page boundary whose frames are not adjacent and prints where
 *     (POST pid= va= len= pm0= pm1= go=PHYS ready), then polls a locked page of its own
 *     until it reads GO-TAG-PID (the test writes it into the guest's RAM, at the
 *     destination), then writes DOMAINM-P-TAG-PID-Q7XK2P across the boundary and
 *     prints POST-WRITTEN pm0= pm1= (the frames again).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGES 64
#define PG 4096UL
#define PFN(e) ((e) & ((1ULL << 55) - 1))

static int pm = -1;

static uint64_t pagemap(uintptr_t va) {
	uint64_t e = 0;
	if (pm < 0)
		pm = open("/proc/self/pagemap", O_RDONLY);
	if (pread(pm, &e, 8, (off_t)(va / PG) * 8) != 8)
		return 0;
	return e;
}

/* put writes kind's marker at p, one byte at a time. */
static size_t put(volatile char *p, char kind, const char *tag) {
	char num[24];
	size_t n = 0;
	char k[2] = {kind, 0};
	const char *parts[] = {"DOMAINM-", k, "-", tag, "-", num, "-Q7XK2P"};
	snprintf(num, sizeof num, "%d", (int)getpid());
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		for (const char *c = parts[i]; *c; c++)
			p[n++] = *c;
	return n;
}

/* split returns the first page i (from 2) of the PAGES at base whose next page's frame
 * does not follow its own, or -1. */
static int split(char *base) {
	for (int i = 2; i + 1 < PAGES; i++) {
		uint64_t a = pagemap((uintptr_t)base + i * PG), b = pagemap((uintptr_t)base + (i + 1) * PG);
		if (a >> 63 && b >> 63 && PFN(b) != PFN(a) + 1)
			return i;
	}
	return -1;
}

/* fault touches the pages at base from the last to the first (so that frames handed
 * out in order land backwards). */
static void fault(char *base) {
	for (int i = PAGES - 1; i >= 0; i--)
		base[i * PG + 1] = 'h';
}

static void stay(void) {
	fflush(stdout);
	for (;;)
		pause();
}

static int frag(void) {
	int a[2], b[2];
	if (pipe(a) || pipe(b))
		return perror("pipe"), 1;
	int size = 4 << 20;
	if (fcntl(a[1], F_SETPIPE_SZ, size) < 0 || fcntl(b[1], F_SETPIPE_SZ, size) < 0)
		return perror("F_SETPIPE_SZ"), 1;
	static char buf[PG];
	memset(buf, 'p', sizeof buf);
	int n = 0;
	for (; n < size / (int)PG; n++)
		if (write(a[1], buf, PG) != (ssize_t)PG || write(b[1], buf, PG) != (ssize_t)PG)
			break;
	close(b[0]);
	close(b[1]);
	printf("FRAG pages=%d\n", n);
	stay();
	return 0;
}

static int share(const char *tag, const char *file) {
	int fd = open(file, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, PAGES * PG) < 0)
		return perror(file), 1;
	char *m = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return perror("mmap"), 1;
	fault(m);
	int i = split(m);
	if (i < 0) {
		printf("SHARE-FAILED no physically non-adjacent pages\n");
		return 1;
	}
	char *p = m + (i + 1) * PG - 9;
	size_t n = put(p, 'S', tag);
	printf("SHARE pid=%d va=%#lx len=%zu off=%lu pm0=%#llx pm1=%#llx\n", (int)getpid(), (unsigned long)p, n,
	       (unsigned long)(p - m), (unsigned long long)pagemap((uintptr_t)p), (unsigned long long)pagemap((uintptr_t)p + n - 1));
	stay();
	return 0;
}

static int attach(const char *file, unsigned long off) {
	int fd = open(file, O_RDONLY);
	if (fd < 0)
		return perror(file), 1;
	/* A page of distance from where the first process has it, should the layouts agree. */
	char *m = mmap(NULL, (PAGES + 1) * PG, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return perror("mmap"), 1;
	munmap(m, PG);
	m = mmap(m + PG, PAGES * PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	if (m == MAP_FAILED)
		return perror("mmap"), 1;
	volatile char sum = 0;
	for (int i = 0; i < PAGES; i++)
		sum += m[i * PG];
	printf("ATTACH pid=%d va=%#lx pm0=%#llx\n", (int)getpid(), (unsigned long)(m + off),
	       (unsigned long long)pagemap((uintptr_t)(m + off)));
	stay();
	return 0;
}

static int post(const char *tag) {
	char *base = sbrk(0);
	char *heap = (char *)(((uintptr_t)base + PG - 1) & ~(PG - 1));
	if (sbrk((heap - base) + PAGES * PG) == (void *)-1)
		return perror("sbrk"), 1;
	madvise(heap, PAGES * PG, MADV_NOHUGEPAGE);
	fault(heap);
	int i = split(heap);
	if (i < 0) {
		printf("POST-FAILED no physically non-adjacent heap pages\n");
		return 1;
	}
	volatile char *go = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	if (go == MAP_FAILED)
		return perror("mmap"), 1;
	go[0] = 'w';
	char want[64];
	snprintf(want, sizeof want, "GO-%s-%d", tag, (int)getpid());
	char *p = heap + (i + 1) * PG - 9;
	size_t n = strlen("DOMAINM-P--") + strlen(tag) + snprintf(NULL, 0, "%d", (int)getpid()) + strlen("-Q7XK2P");
	printf("POST pid=%d va=%#lx len=%zu pm0=%#llx pm1=%#llx go=%#llx ready\n", (int)getpid(), (unsigned long)p, n,
	       (unsigned long long)pagemap((uintptr_t)p), (unsigned long long)pagemap((uintptr_t)p + n - 1),
	       (unsigned long long)(PFN(pagemap((uintptr_t)go)) * PG));
	fflush(stdout);
	struct timespec ts = {0, 50 * 1000 * 1000};
	for (;;) {
		size_t k = 0;
		while (want[k] && go[k] == want[k])
			k++;
		if (!want[k])
			break;
		nanosleep(&ts, NULL);
	}
	put(p, 'P', tag);
	printf("POST-WRITTEN pm0=%#llx pm1=%#llx\n", (unsigned long long)pagemap((uintptr_t)p),
	       (unsigned long long)pagemap((uintptr_t)p + n - 1));
	stay();
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "frag"))
		return frag();
	if (argc >= 4 && !strcmp(argv[1], "share"))
		return share(argv[2], argv[3]);
	if (argc >= 4 && !strcmp(argv[1], "attach"))
		return attach(argv[2], strtoul(argv[3], NULL, 0));
	if (argc >= 3 && !strcmp(argv[1], "post"))
		return post(argv[2]);
	fprintf(stderr, "usage: postmark frag | share TAG FILE | attach FILE OFF | post TAG\n");
	return 2;
}
