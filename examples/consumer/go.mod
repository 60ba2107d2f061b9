module example.com/consumer

go 1.26.8

// github.com/vmmgo/vmm is not published: the module proxy and a git fetch
// of that path both fail. Require it at the zero pseudo-version and point
// it at a checkout; docs/vmtest.md "Using vmtest from another module".
require github.com/vmmgo/vmm v0.0.0-00010101000000-000000000000

require (
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	github.com/u-root/u-root v0.16.0 // indirect
	github.com/u-root/uio v0.0.0-20240224005618-d2acac8f3701 // indirect
	github.com/ulikunitz/xz v0.5.17 // indirect
	golang.org/x/arch v0.32.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/vmmgo/vmm => ../..
