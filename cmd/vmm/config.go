package main

// The --config file: the same machine as the flags, in JSON. Its keys are
// the native flag names with "_" for "-" ("memory_backend" is
// --memory-backend); devices are objects. A file is applied through the
// flags themselves (flag.FlagSet.Set), so the file and the flags cannot
// mean different things: `vmm boot FLAGS --print-config > vm.json` and
// `vmm boot --config vm.json` build the same machine (TestConfigRoundTrip).
// Flags given next to --config override the file's values; repeatable
// device flags add devices to the file's.
//
// A Firecracker config file ("boot-source", "machine-config", "drives",
// "network-interfaces", "vsock", "entropy") is read too and translated.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// configVersion is the "version" of the files --print-config writes.
const configVersion = 1

// notInConfig are boot flags that are not part of the machine's
// description: aliases, QEMU spellings and the config flags themselves.
var notInConfig = map[string]bool{
	"smp": true, "m": true, "append": true, "stats-socket": true, "initramfs": true,
	"config": true, "config-file": true, "print-config": true,
}

// deviceKeys are the repeatable (or object-valued) device flags.
var deviceKeys = map[string]bool{"disk": true, "net": true, "console-port": true, "vsock": true}

// configKey is the JSON key of flag name.
func configKey(name string) string { return strings.ReplaceAll(name, "-", "_") }

// configFlags returns the flags a config file may set, sorted.
func configFlags(fs *flag.FlagSet) []*flag.Flag {
	var out []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !notInConfig[f.Name] && !qemuFlagNames[f.Name] {
			out = append(out, f)
		}
	})
	return out
}

// writeConfig renders the parsed flags as a config file.
func (b *bootFlags) writeConfig() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{\n  \"version\": " + strconv.Itoa(configVersion))
	put := func(key string, v any) error {
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprintf(&buf, ",\n  %q: %s", key, j)
		return nil
	}
	for _, f := range configFlags(b.fs) {
		key := configKey(f.Name)
		var err error
		switch {
		case f.Name == "disk":
			list := make([]map[string]any, 0, len(b.df.disks))
			for _, d := range b.df.disks {
				list = append(list, d.object())
			}
			err = put(key+"s", list)
		case f.Name == "net":
			list := make([]map[string]any, 0, len(b.df.nets))
			for _, n := range b.df.nets {
				list = append(list, n.object())
			}
			err = put(key+"s", list)
		case f.Name == "console-port":
			list := make([]map[string]any, 0, len(b.df.ports))
			for _, p := range b.df.ports {
				list = append(list, map[string]any{"name": p.name, "path": p.path})
			}
			err = put(key+"s", list)
		case f.Name == "vsock":
			if v := b.df.vsock; v != nil {
				err = put(key, map[string]any{"cid": v.cid, "path": v.path})
			} else {
				err = put(key, nil)
			}
		default:
			v := f.Value.(flag.Getter).Get()
			if d, ok := v.(time.Duration); ok {
				v = d.String()
			}
			err = put(key, v)
		}
		if err != nil {
			return nil, fmt.Errorf("--print-config: %s: %w", f.Name, err)
		}
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), nil
}

func (d diskSpec) object() map[string]any {
	o := map[string]any{"path": d.path}
	if d.readOnly {
		o["readonly"] = true
	}
	if d.serial != "" {
		o["serial"] = d.serial
	}
	return o
}

func (n netSpec) object() map[string]any {
	o := map[string]any{}
	if n.tap != "" {
		o["tap"] = n.tap
	}
	if n.fd >= 0 {
		o["fd"] = n.fd
	}
	if n.mac != nil {
		o["mac"] = n.mac.String()
	}
	return o
}

// loadConfig applies the config file at path to fs, through fs.Set.
func loadConfig(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		return fmt.Errorf("--config %s: not a JSON object: %w", path, err)
	}
	if _, ok := top["boot-source"]; ok {
		if top, err = fromFirecracker(top); err != nil {
			return fmt.Errorf("--config %s (Firecracker format): %w", path, err)
		}
	}
	if v, ok := top["version"]; ok {
		if n, err := strconv.Atoi(string(v)); err != nil || n != configVersion {
			return fmt.Errorf("--config %s: version %s: this vmm reads version %d", path, v, configVersion)
		}
	}
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	known := map[string]*flag.Flag{}
	var names []string
	for _, f := range configFlags(fs) {
		k := configKey(f.Name)
		if deviceKeys[f.Name] && f.Name != "vsock" {
			k += "s"
		}
		known[k] = f
		names = append(names, k)
	}
	for _, k := range keys {
		if k == "version" {
			continue
		}
		f, ok := known[k]
		if !ok {
			msg := fmt.Sprintf("--config %s: unknown key %q", path, k)
			if s := suggest(k, names); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return fmt.Errorf("%s", msg)
		}
		if err := setFromJSON(fs, f, top[k]); err != nil {
			return fmt.Errorf("--config %s: %q: %w", path, k, err)
		}
	}
	return nil
}

// setFromJSON sets flag f from one JSON value.
func setFromJSON(fs *flag.FlagSet, f *flag.Flag, raw json.RawMessage) error {
	if string(raw) == "null" {
		return nil
	}
	if deviceKeys[f.Name] {
		var objs []map[string]json.RawMessage
		if f.Name == "vsock" {
			var o map[string]json.RawMessage
			if err := json.Unmarshal(raw, &o); err != nil {
				return fmt.Errorf("want an object: %w", err)
			}
			objs = append(objs, o)
		} else if err := json.Unmarshal(raw, &objs); err != nil {
			return fmt.Errorf("want a list of objects: %w", err)
		}
		for i, o := range objs {
			s, err := optionString(o)
			if err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
			if err := fs.Set(f.Name, s); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case bool:
		s = strconv.FormatBool(x)
	case json.Number:
		s = x.String()
	default:
		return fmt.Errorf("want a string, number or boolean, not %s", raw)
	}
	return fs.Set(f.Name, s)
}

// optionString turns a device object into the flag's option syntax
// (key=value,...; true booleans are bare words), so the file goes through
// the flag's own checks.
func optionString(o map[string]json.RawMessage) (string, error) {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		var v any
		dec := json.NewDecoder(bytes.NewReader(o[k]))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return "", fmt.Errorf("%s: %w", k, err)
		}
		switch x := v.(type) {
		case bool:
			if x {
				parts = append(parts, k)
			}
		case string:
			if strings.Contains(x, ",") {
				return "", fmt.Errorf("%s %q: a comma cannot be expressed here (nor in the flag)", k, x)
			}
			parts = append(parts, k+"="+x)
		case json.Number:
			parts = append(parts, k+"="+x.String())
		case nil:
		default:
			return "", fmt.Errorf("%s: want a string, number or boolean", k)
		}
	}
	return strings.Join(parts, ","), nil
}

// fromFirecracker translates a Firecracker --config-file into this
// format's keys. Firecracker's boot_args is added after vmm's default
// command line (console=ttyS0 and friends), not instead of it.
func fromFirecracker(top map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	var fc struct {
		BootSource struct {
			Kernel  string `json:"kernel_image_path"`
			Initrd  string `json:"initrd_path"`
			Cmdline string `json:"boot_args"`
		} `json:"boot-source"`
		Machine *struct {
			VCPUs  int  `json:"vcpu_count"`
			MemMiB int  `json:"mem_size_mib"`
			SMT    bool `json:"smt"`
		} `json:"machine-config"`
		Drives []struct {
			ID       string `json:"drive_id"`
			Path     string `json:"path_on_host"`
			Root     bool   `json:"is_root_device"`
			ReadOnly bool   `json:"is_read_only"`
		} `json:"drives"`
		Nets []struct {
			ID  string `json:"iface_id"`
			TAP string `json:"host_dev_name"`
			MAC string `json:"guest_mac"`
		} `json:"network-interfaces"`
		Vsock *struct {
			CID  uint64 `json:"guest_cid"`
			Path string `json:"uds_path"`
		} `json:"vsock"`
		Entropy *json.RawMessage `json:"entropy"`
	}
	raw, _ := json.Marshal(top)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, err
	}
	out := map[string]any{"kernel": fc.BootSource.Kernel}
	if fc.BootSource.Initrd != "" {
		out["initrd"] = fc.BootSource.Initrd
	}
	if fc.BootSource.Cmdline != "" {
		out["cmdline"] = fc.BootSource.Cmdline
	}
	if m := fc.Machine; m != nil {
		if m.VCPUs > 0 {
			out["cpus"] = m.VCPUs
		}
		if m.MemMiB > 0 {
			out["memory"] = fmt.Sprintf("%dM", m.MemMiB)
		}
	}
	var disks []map[string]any
	for _, d := range fc.Drives {
		o := map[string]any{"path": d.Path}
		if d.ReadOnly {
			o["readonly"] = true
		}
		if len(d.ID) <= 20 && d.ID != "" {
			o["serial"] = d.ID
		}
		disks = append(disks, o)
		if d.Root {
			root := fmt.Sprintf("root=/dev/vd%c", 'a'+len(disks)-1)
			if d.ReadOnly {
				root += " ro"
			} else {
				root += " rw"
			}
			if c, _ := out["cmdline"].(string); !strings.Contains(c, "root=") {
				out["cmdline"] = strings.TrimSpace(c + " " + root)
			}
		}
	}
	if disks != nil {
		out["disks"] = disks
	}
	var nets []map[string]any
	for _, n := range fc.Nets {
		o := map[string]any{"tap": n.TAP}
		if n.MAC != "" {
			o["mac"] = n.MAC
		}
		nets = append(nets, o)
	}
	if nets != nil {
		out["nets"] = nets
	}
	if v := fc.Vsock; v != nil {
		out["vsock"] = map[string]any{"cid": v.CID, "path": v.Path}
	}
	if fc.Entropy != nil {
		out["rng"] = true
	}
	res := map[string]json.RawMessage{}
	for k, v := range out {
		j, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		res[k] = j
	}
	return res, nil
}
