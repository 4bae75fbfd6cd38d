package backup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/gantry-paas/gantry/internal/artifact"
)

// An exported snapshot is one tar compressed with zstd: the tree of a
// snapshot read back (snapshot/: the settings, the repository bundle, the
// database dumps; data/: the data directory), so it moves an app between
// platforms and opens with stock tar and zstd.

// WriteArchive writes the tree at dir as tar + zstd to w.
func WriteArchive(w io.Writer, dir string) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return err
	}
	if err := artifact.Pack(zw, dir); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// ErrTooLarge is an archive that unpacks to more than the limit.
var ErrTooLarge = errors.New("the archive unpacks to more than this server accepts")

// ReadArchive unpacks a tar + zstd archive into dir (which must not exist):
// nothing lands outside dir, at most limit bytes are unpacked, set-user-ID
// and set-group-ID bits are dropped.
func ReadArchive(r io.Reader, dir string, limit int64) error {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer zr.Close()
	lr := &limitReader{r: zr, left: limit}
	if err := artifact.Unpack(lr, dir, false); err != nil {
		if lr.over {
			return fmt.Errorf("%w (%d MiB)", ErrTooLarge, limit>>20)
		}
		return fmt.Errorf("the archive is not a Gantry snapshot (tar + zstd): %w", err)
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 {
			return err
		}
		fi, err := d.Info()
		if err == nil && fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
			err = os.Chmod(p, fi.Mode().Perm())
		}
		return err
	})
}

type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		l.over = true
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
