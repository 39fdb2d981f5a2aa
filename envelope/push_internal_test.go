package envelope

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// splitWriterTo hands its data to WriteTo in random pieces, to drive pushSink through chunks
// split across Write calls (bytes.Reader always hands over one slice).
type splitWriterTo struct {
	data []byte
	rng  *rand.Rand
}

func (s *splitWriterTo) Read(p []byte) (int, error) { panic("push path must not Read") }

func (s *splitWriterTo) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for len(s.data) > 0 {
		k := min(len(s.data), 1+s.rng.IntN(300))
		n, err := w.Write(s.data[:k])
		total += int64(n)
		s.data = s.data[n:]
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func TestPushSinkSplitWrites(t *testing.T) {
	t.Parallel()
	dek := sha256.Sum256([]byte("push test dek"))
	ec, err := NewContext("push", nil)
	require.NoError(t, err)
	for _, size := range []int{0, 1, 100, 128, 129, 1000, 1024} {
		pt := bytes.Repeat([]byte{0xa5}, size)
		var sealed bytes.Buffer
		w, err := NewWriter(&sealed, dek[:], &Header{ID: "push", ChunkSize: 128, Context: ec})
		require.NoError(t, err)
		_, _ = w.Write(pt)
		require.NoError(t, w.Close())
		file := sealed.Bytes()
		for seed := uint64(0); seed < 20; seed++ {
			// Intact, truncated and extended inputs: push and pull must agree exactly.
			for _, in := range [][]byte{file, file[:len(file)-1], file[:len(file)-20], append(bytes.Clone(file), 0, 1, 2)} {
				hdr, raw, err := readHeader(bytes.NewReader(in))
				if len(in) < len(file)-16 && err != nil {
					continue // cut inside the header: not a payload case
				}
				require.NoError(t, err)
				src := &splitWriterTo{data: in[len(raw):], rng: rand.New(rand.NewPCG(seed, 1))}
				r, err := newReader(src, hdr, raw, dek[:], 1)
				require.NoError(t, err)
				var pushed bytes.Buffer
				_, pushErr := r.push(&pushed)

				r2, err := NewReader(io.MultiReader(bytes.NewReader(in)), dek[:])
				require.NoError(t, err)
				var pulled bytes.Buffer
				_, pullErr := r2.WriteTo(&pulled)
				require.Equal(t, pullErr, pushErr, "size %d seed %d len %d", size, seed, len(in))
				require.Equal(t, pulled.String(), pushed.String())
				if len(in) == len(file) {
					require.NoError(t, pushErr)
					require.Equal(t, string(pt), pushed.String())
				}
			}
		}
	}
}

// sizedWriterTo is a splitWriterTo that also reports its length, like bytes.Reader, so the
// sink can open the final chunk straight from the source; grow > 0 makes it hand over that
// many more bytes than it reported.
type sizedWriterTo struct {
	splitWriterTo
	grow int
}

func (s *sizedWriterTo) Len() int { return len(s.data) - s.grow }

func TestPushSinkKnownLength(t *testing.T) {
	t.Parallel()
	dek := sha256.Sum256([]byte("push test dek"))
	ec, err := NewContext("push", nil)
	require.NoError(t, err)
	for _, size := range []int{0, 1, 100, 128, 129, 256, 1000, 1024} {
		pt := bytes.Repeat([]byte{0x5a}, size)
		var sealed bytes.Buffer
		w, err := NewWriter(&sealed, dek[:], &Header{ID: "push", ChunkSize: 128, Context: ec})
		require.NoError(t, err)
		_, _ = w.Write(pt)
		require.NoError(t, w.Close())
		file := sealed.Bytes()
		last := file[max(0, len(file)-144):] // up to one sealed chunk from the end
		for _, in := range [][]byte{file, file[:len(file)-1], file[:len(file)-20], file[:len(file)-len(last)],
			append(bytes.Clone(file), 0, 1, 2), append(bytes.Clone(file), last...)} {
			hdr, raw, err := readHeader(bytes.NewReader(in))
			if err != nil {
				continue // cut inside the header: not a payload case
			}
			r, err := NewReader(io.MultiReader(bytes.NewReader(in)), dek[:])
			require.NoError(t, err)
			var pulled bytes.Buffer
			_, pullErr := r.WriteTo(&pulled)

			sources := []io.Reader{bytes.NewReader(in[len(raw):]), bytes.NewBuffer(bytes.Clone(in[len(raw):]))}
			for seed := uint64(0); seed < 10; seed++ {
				sources = append(sources, &sizedWriterTo{splitWriterTo: splitWriterTo{data: in[len(raw):], rng: rand.New(rand.NewPCG(seed, 2))}})
			}
			for i, src := range sources {
				r, err := newReader(src, hdr, raw, dek[:], 1)
				require.NoError(t, err)
				var pushed bytes.Buffer
				_, pushErr := r.push(&pushed)
				require.Equal(t, pullErr, pushErr, "size %d source %d len %d", size, i, len(in))
				require.Equal(t, pulled.String(), pushed.String())
				if len(in) == len(file) {
					require.NoError(t, pushErr)
					require.Equal(t, string(pt), pushed.String())
				}
			}
		}

		// A source that hands over more than its length said is refused, and nothing past
		// the last authenticated chunk is released.
		hdr, raw, err := readHeader(bytes.NewReader(file))
		require.NoError(t, err)
		body := append(bytes.Clone(file[len(raw):]), 7)
		r, err := newReader(&sizedWriterTo{splitWriterTo: splitWriterTo{data: body, rng: rand.New(rand.NewPCG(1, 1))}, grow: 1}, hdr, raw, dek[:], 1)
		require.NoError(t, err)
		var pushed bytes.Buffer
		_, err = r.push(&pushed)
		require.Error(t, err)
		require.True(t, bytes.HasPrefix(pt, pushed.Bytes()))
	}
}
