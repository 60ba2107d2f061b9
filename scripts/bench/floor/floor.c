/*
 * floor: the smallest VMM that runs the benchmark guest (scripts/benchguest),
 * the bench's "floor" column. Raw KVM ioctls and nothing else: one VM, one
 * memory slot, one vCPU, the PVH ELF's PT_LOAD segments copied in, 32-bit
 * protected mode at the ELF entry (the guest's PVH note names the same
 * address: guest.ld has ENTRY(_start)), and a KVM_RUN loop that decodes only
 * port writes:
 *   0x3f8 (COM1 THR)  the byte goes to stdout (the start and end markers)
 *   0x3ff (COM1 SCR)  nothing: the exit loop
 *   0xf4, 0x604       exit 0 (QEMU's isa-debug-exit, ACPI S5)
 * and HLT (the idle variant's cli; hlt: nothing can wake the vCPU), which
 * leaves the process asleep until it is killed, as a VMM with an idle guest.
 * Anything else the guest does that exits ends the program with status 1 and
 * the reason on stderr. Built by the bench with gcc in the same run.
 *
 *   floor GUEST.elf MEMORY_MIB
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *what)
{
	fprintf(stderr, "floor: %s\n", what);
	exit(1);
}

static uint64_t load_elf(const char *path, uint8_t *mem, uint64_t size)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	uint8_t *f = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f == MAP_FAILED)
		die("mmap the guest");
	close(fd);
	if ((size_t)st.st_size < sizeof(Elf64_Ehdr))
		fail("guest: not an ELF64 file");
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64)
		fail("guest: not an ELF64 file");
	if (eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > (uint64_t)st.st_size)
		fail("guest: program headers out of the file");
	for (int i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr *ph = (Elf64_Phdr *)(f + eh->e_phoff) + i;
		if (ph->p_type != PT_LOAD)
			continue;
		if (ph->p_offset + ph->p_filesz > (uint64_t)st.st_size || ph->p_filesz > ph->p_memsz ||
		    ph->p_paddr + ph->p_memsz > size)
			fail("guest: PT_LOAD segment out of bounds");
		memcpy(mem + ph->p_paddr, f + ph->p_offset, ph->p_filesz);
		memset(mem + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
	}
	return eh->e_entry;
}

static void flat(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	*s = (struct kvm_segment){.base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
				  .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
}

int main(int argc, char **argv)
{
	if (argc != 3)
		fail("usage: floor GUEST.elf MEMORY_MIB");
	uint64_t size = strtoull(argv[2], NULL, 10) << 20;
	if (size < (2 << 20))
		fail("memory below 2 MiB");

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != 12)
		fail("KVM API version is not 12");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		die("KVM_SET_TSS_ADDR");

	uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap guest RAM");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uintptr_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	uint64_t entry = load_elf(argv[1], mem, size);

	int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (cpu < 0)
		die("KVM_CREATE_VCPU");
	/* The CPL3 variant enters long mode: EFER.LME needs CPUID.LM in the
	 * guest's table, so give it what KVM supports. */
	int n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
	cpuid->nent = n;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(cpu, KVM_SET_CPUID2, cpuid) < 0)
		die("KVM_SET_CPUID2");
	int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (runsz < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");

	struct kvm_sregs sregs;
	if (ioctl(cpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	flat(&sregs.cs, 0x08, 0xb);
	flat(&sregs.ds, 0x10, 0x3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(cpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = entry, .rflags = 2};
	if (ioctl(cpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");

	for (;;) {
		if (ioctl(cpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction != KVM_EXIT_IO_OUT)
				break; /* reads see whatever the page holds */
			switch (run->io.port) {
			case 0x3ff:
				break;
			case 0x3f8:
				if (write(1, (uint8_t *)run + run->io.data_offset, 1) != 1)
					die("write stdout");
				break;
			case 0xf4:
			case 0x604:
				return 0;
			}
			break;
		case KVM_EXIT_HLT:
			for (;;)
				pause();
		default:
			fprintf(stderr, "floor: exit reason %u\n", run->exit_reason);
			return 1;
		}
	}
}
