package main

// equivalent is one row of the table in docs/cli.md: how QEMU,
// Firecracker and Cloud Hypervisor users say a thing, and how vmm says it.
// TestEquivalents checks that every vmm spelling parses, and that every
// QEMU and Cloud Hypervisor spelling vmm accepts describes the same machine
// as the vmm one.
type equivalent struct {
	what string
	// qemu is QEMU's spelling; qemuOK says vmm accepts it as is.
	qemu   string
	qemuOK bool
	// firecracker is the --config-file key (or API), cloudHV the
	// cloud-hypervisor flag; chOK says vmm boot accepts it as is.
	firecracker, cloudHV string
	chOK                 bool
	// vmm is the native spelling (boot flags), or "" when there is none.
	vmm string
}

var equivalents = []equivalent{
	{"kernel", "-kernel vmlinux", true, `"boot-source": {"kernel_image_path"}`, "--kernel vmlinux", true, "--kernel vmlinux"},
	{"initramfs", "-initrd rd.cpio", true, `"boot-source": {"initrd_path"}`, "--initramfs rd.cpio", true, "--initrd rd.cpio"},
	{"command line", "-append 'quiet'", true, `"boot-source": {"boot_args"}`, "--cmdline 'quiet'", true, "--cmdline quiet"},
	{"vCPUs", "-smp 2", true, `"machine-config": {"vcpu_count"}`, "--cpus boot=2", true, "--cpus 2"},
	{"RAM", "-m 1G", true, `"machine-config": {"mem_size_mib"}`, "--memory size=1G", true, "--memory 1G"},
	{"hugepage RAM", "-mem-path /dev/hugepages", false, `"machine-config": {"huge_pages": "2M"}`, "--memory size=1G,hugepages=on", false, "--memory-backend hugetlb --hugepage-size 2M"},
	{"disk", "-drive file=disk.img,if=virtio", true, `"drives": [{"path_on_host"}]`, "--disk path=disk.img", true, "--disk disk.img"},
	{"read-only disk", "-drive file=disk.img,if=virtio,readonly=on", true, `"drives": [{"is_read_only": true}]`, "--disk path=disk.img,readonly=on", true, "--disk disk.img,readonly"},
	{"TAP network", "-netdev tap,id=n0,ifname=tap0 -device virtio-net-pci,netdev=n0", true, `"network-interfaces": [{"host_dev_name"}]`, "--net tap=tap0", true, "--net tap=tap0"},
	{"MAC address", "-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 -netdev tap,id=n0,ifname=tap0", true, `"network-interfaces": [{"guest_mac"}]`, "--net tap=tap0,mac=52:54:00:12:34:56", true, "--net tap=tap0,mac=52:54:00:12:34:56"},
	{"entropy", "-device virtio-rng-pci", true, `"entropy": {}`, "--rng", true, "--rng"},
	{"vsock", "-device vhost-vsock-pci,guest-cid=3", false, `"vsock": {"guest_cid", "uds_path"}`, "--vsock cid=3,socket=v.sock", true, "--vsock cid=3,path=v.sock"},
	{"serial console on stdio", "-serial stdio", true, "(always)", "--serial tty", true, "--console stdio"},
	{"serial console to a file", "-serial file:console.log", true, "", "--serial file=console.log", true, "--console file:console.log"},
	{"no display", "-nographic", true, "(no display)", "(no display)", false, ""},
	{"KVM", "-enable-kvm", true, "(always)", "(always)", false, ""},
	{"machine type", "-M microvm", true, "(one type)", "(one type)", false, ""},
	{"host CPU features", "-cpu host", true, "(host CPUID, or \"cpu-config\" templates)", "(host CPUID by default)", false, "--cpu-profile auto"},
	{"virtio console (hvc0)", "-device virtio-serial -device virtconsole", false, "", "--console tty", false, "--virtio-console"},
	{"gdb stub, wait for gdb", "-s -S", true, "(gdb feature build)", "--gdb path=gdb.sock", false, "--gdb tcp:127.0.0.1:1234 --gdb-wait"},
	{"whole machine from a file", "-readconfig vm.cfg", false, "--config-file vm.json", "(REST: PUT /vm.create)", false, "--config vm.json"},
	{"print the machine as a file", "", false, "", "", false, "--print-config"},
	{"control socket", "-qmp unix:qmp.sock,server", false, "--api-sock fc.sock", "--api-socket ch.sock", false, "--control-socket vm.sock"},
	{"pause / resume", "(QMP) stop / cont", false, "PATCH /vm {\"state\": \"Paused\"}", "ch-remote pause / resume", false, "vmm ctl vm.sock pause / resume"},
	{"counters", "(QMP) query-stats", false, "GET /metrics (metrics file)", "ch-remote counters", false, "vmm stats [--json] vm.sock"},
	{"stop the guest", "(QMP) quit", false, "PUT /actions SendCtrlAltDel", "ch-remote shutdown", false, "vmm ctl vm.sock stop"},
	{"stop after a time", "", false, "", "", false, "--timeout 30"},
}
