package torture

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// What the files of a Maildir say, read directly, without Roost's code:
// the tests compare it with what the daemons answer.

// diskFile is one message file in cur/ or new/.
type diskFile struct {
	folder string // "INBOX" or the Maildir++ directory without its dot
	base   string // file name up to ':'
	info   string // after ':2,': flags and keyword letters
	id     string // test Message-ID, "" for a foreign file
	whole  bool
	size   int64
}

// diskView is a Maildir's message files by folder, plus what else was seen.
type diskView struct {
	files    []diskFile
	tmpFiles int      // files left in tmp/ directories (invisible)
	problems []string // partial or unreadable messages in cur/ or new/
}

// count returns how many whole files of each folder carry each id.
func (v diskView) count() map[key]int {
	n := map[key]int{}
	for _, f := range v.files {
		if f.id != "" {
			n[key{f.folder, f.id}]++
		}
	}
	return n
}

// bytes is the total size and number of message files (what maildirsize
// must add up to with Trash counted).
func (v diskView) bytes() (size, msgs int64) {
	for _, f := range v.files {
		size += f.size
		msgs++
	}
	return size, msgs
}

// key names a message in a folder.
type key struct{ folder, id string }

// folderDirs maps folder names ("INBOX", "Work", "A.B") to directories.
func folderDirs(md string) (map[string]string, error) {
	dirs := map[string]string{"INBOX": md}
	ents, err := os.ReadDir(md)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		n := e.Name()
		if len(n) > 1 && n[0] == '.' && n[1] != '.' && e.IsDir() {
			if _, err := os.Stat(filepath.Join(md, n, "maildirfolder")); err == nil {
				dirs[n[1:]] = filepath.Join(md, n)
			}
		}
	}
	return dirs, nil
}

// scanMaildir reads every message file of the Maildir md.
func scanMaildir(md string) (diskView, error) {
	var v diskView
	dirs, err := folderDirs(md)
	if err != nil {
		return v, err
	}
	for folder, dir := range dirs {
		if tmp, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
			v.tmpFiles += len(tmp)
		}
		for _, sub := range []string{"cur", "new"} {
			ents, err := os.ReadDir(filepath.Join(dir, sub))
			if err != nil {
				if os.IsNotExist(err) {
					continue
				}
				return v, err
			}
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") {
					continue
				}
				p := filepath.Join(dir, sub, e.Name())
				data, err := os.ReadFile(p)
				if os.IsNotExist(err) {
					continue
				}
				if err != nil {
					v.problems = append(v.problems, fmt.Sprintf("%s: %v", p, err))
					continue
				}
				id, whole := parseMessage(data)
				if id != "" && !whole {
					v.problems = append(v.problems, fmt.Sprintf("partial message %s in %s (%d bytes)", id, p, len(data)))
				}
				base, info, _ := strings.Cut(e.Name(), ":")
				info = strings.TrimPrefix(info, "2,")
				v.files = append(v.files, diskFile{folder: folder, base: base, info: info, id: id, whole: whole, size: int64(len(data))})
			}
		}
	}
	sort.Slice(v.files, func(i, j int) bool { return v.files[i].base < v.files[j].base })
	return v, nil
}

// uidlistFile is a dovecot-uidlist (version 3) read by the test itself.
type uidlistFile struct {
	uidValidity uint32
	nextUID     uint32
	byName      map[string]uint32 // base file name -> UID
	dupUIDs     []uint32
}

func readUidlist(dir string) (uidlistFile, error) {
	ul := uidlistFile{byName: map[string]uint32{}}
	data, err := os.ReadFile(filepath.Join(dir, "dovecot-uidlist"))
	if err != nil {
		return ul, err
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	hdr := strings.Fields(lines[0])
	if len(hdr) < 3 || hdr[0] != "3" {
		return ul, fmt.Errorf("dovecot-uidlist header %q is not version 3", lines[0])
	}
	for _, f := range hdr[1:] {
		n, _ := strconv.ParseUint(f[1:], 10, 32)
		switch f[0] {
		case 'V':
			ul.uidValidity = uint32(n)
		case 'N':
			ul.nextUID = uint32(n)
		}
	}
	seen := map[uint32]bool{}
	for _, l := range lines[1:] {
		uidStr, rest, ok := strings.Cut(l, " ")
		_, name, ok2 := strings.Cut(rest, ":")
		uid, err := strconv.ParseUint(uidStr, 10, 32)
		if !ok || !ok2 || err != nil {
			return ul, fmt.Errorf("dovecot-uidlist record %q", l)
		}
		if seen[uint32(uid)] {
			ul.dupUIDs = append(ul.dupUIDs, uint32(uid))
		}
		seen[uint32(uid)] = true
		base, _, _ := strings.Cut(name, ":")
		ul.byName[base] = uint32(uid)
	}
	return ul, nil
}

// readKeywords reads dovecot-keywords: index -> keyword. A missing file is
// an empty table.
func readKeywords(dir string) (map[int]string, error) {
	out := map[int]string{}
	data, err := os.ReadFile(filepath.Join(dir, "dovecot-keywords"))
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if l == "" {
			continue
		}
		idxStr, name, ok := strings.Cut(l, " ")
		idx, err := strconv.Atoi(idxStr)
		if !ok || err != nil || idx < 0 || idx > 25 || name == "" {
			return nil, fmt.Errorf("dovecot-keywords line %q", l)
		}
		out[idx] = name
	}
	return out, nil
}
