package firmware
import ("testing";"os";"time";"path/filepath";"bytes")
func TestZZReal(t *testing.T) {
	files, _ := filepath.Glob("/root/.cache/vmm/kernel-*/bzImage")
	files = append(files, "/root/go/pkg/mod/github.com/u-root/u-root@v0.16.0/pkg/boot/bzimage/testdata/bzImage-linux5.10-x86_64-gzip", "/root/go/pkg/mod/github.com/u-root/u-root@v0.16.0/pkg/boot/bzimage/testdata/bzImage-linux5.10-x86_64-zstd")
	for _, f := range files {
		img, _ := os.ReadFile(f)
		bz, err := ParseBzImage(img)
		if err != nil { t.Errorf("%s: %v", f, err); continue }
		st := time.Now()
		vml, codec, err := ExtractVmlinux(img)
		if err != nil { t.Errorf("%s: %v", f, err); continue }
		e, err := ParseELF(vml)
		if err != nil { t.Errorf("%s: %v", f, err); continue }
		t.Logf("%s: proto %#x relocatable %v align %#x init_size %#x pref %#x cmdline_size %d; %s -> %d bytes in %v; entry %#x pvh %v %#x segs %d", f, bz.Header.Version, bz.Header.Relocatable, bz.Header.KernelAlignment, bz.Header.InitSize, bz.Header.PrefAddress, bz.Header.CmdlineSize, codec, len(vml), time.Since(st), e.Entry, e.HasPVH, e.PVHEntry, len(e.Segments))
		ref := filepath.Join(filepath.Dir(f), "vmlinux")
		if rb, err := os.ReadFile(ref); err == nil {
			re, err := ParseELF(rb)
			if err != nil { t.Errorf("ref: %v", err); continue }
			if re.PVHEntry != e.PVHEntry || len(re.Segments) != len(e.Segments) { t.Errorf("mismatch pvh %#x vs %#x", re.PVHEntry, e.PVHEntry) }
			for i, s := range e.Segments {
				rs := re.Segments[i]
				if s.PAddr != rs.PAddr || s.MemSize != rs.MemSize || !bytes.Equal(vml[s.Offset:s.Offset+s.FileSize], rb[rs.Offset:rs.Offset+rs.FileSize]) { t.Errorf("segment %d differs", i) }
			}
			mem := newSparseMem(512<<20)
			m, _ := DefaultE820(512<<20)
			bi, err := Load(mem, img, []byte("initrd"), Config{E820: m, Cmdline: "console=ttyS0", Extract: true})
			t.Logf("Load extract: %+v %v", bi, err)
			bi, err = Load(newSparseMem(512<<20), img, []byte("initrd"), Config{E820: m, Cmdline: "console=ttyS0"})
			t.Logf("Load bzImage: entry %#x end %#x initrd %#x %v", bi.Entry, bi.KernelEnd, bi.InitrdAddr, err)
		}
	}
}
