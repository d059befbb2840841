package alert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// The spool keeps every accepted event until each sink has delivered it. It is one
// bbolt file (a B+tree with copy-on-write pages and an fsync per commit: a commit
// either happened or not, whatever kills the process). Per sink it has two buckets:
//
//	"q:<sink>": seq (8 bytes, big endian) → severity (1 byte) + event JSON
//	"i:<sink>": 7-severity (1 byte) + seq  → empty; its first key is the least
//	            severe, oldest event: the one to drop when the sink's spool is full.
//	"acked":    sink → seq (8 bytes): a stream sink's receiver acknowledged the
//	            events up to seq at the TCP level, but they are not confirmed yet
//	            (see ackWindow). A new process counts them delivered (dropAcked).
//
// Sequence numbers come from the bucket's own counter, so delivery order is
// acceptance order and survives restarts.
type spool struct {
	db *bolt.DB

	mu    sync.Mutex
	sinks map[string]*spoolStats
}

type spoolStats struct {
	max   int64
	n     int
	bytes int64
}

// recordOverhead approximates what bbolt spends per event beyond the JSON (two keys,
// element headers), so that max bytes tracks the file's use.
const recordOverhead = 64

type record struct {
	seq  uint64
	sev  Severity
	data []byte
}

var ackedBucket = []byte("acked")

func qName(sink string) []byte { return []byte("q:" + sink) }
func iName(sink string) []byte { return []byte("i:" + sink) }

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func idxKey(sev Severity, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{7 - byte(sev&7)}, seq)
}

// openSpool opens (creating) the spool file and the buckets of the given sinks,
// counting what they hold. Buckets of sinks no longer configured are returned in
// orphans (name → events) and removed.
func openSpool(path string, max map[string]int64) (s *spool, orphans map[string]int, err error) {
	s, orphans, err = openSpoolFile(path, max)
	if err != nil {
		return nil, nil, err
	}
	// bbolt never gives pages back to the file system: a spool that once held a
	// long outage stays big. Start over when it is empty and large.
	total := 0
	for name := range max {
		n, _ := s.stats(name)
		total += n
	}
	if total == 0 && s.fileSize() > compactAbove {
		s.close()
		if err := os.Remove(path); err != nil {
			return nil, nil, fmt.Errorf("shrinking the empty alert spool: %w", err)
		}
		s, _, err = openSpoolFile(path, max)
		if err != nil {
			return nil, nil, err
		}
	}
	return s, orphans, nil
}

// compactAbove is the size above which an empty spool file is recreated at start.
const compactAbove = 16 << 20

func openSpoolFile(path string, max map[string]int64) (s *spool, orphans map[string]int, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, nil, fmt.Errorf("opening alert spool %s: %w", path, err)
	}
	s = &spool{db: db, sinks: map[string]*spoolStats{}}
	orphans = map[string]int{}
	err = db.Update(func(tx *bolt.Tx) error {
		var stale [][]byte
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			n := string(name)
			if len(n) > 2 && n[:2] == "q:" {
				if _, ok := max[n[2:]]; !ok {
					orphans[n[2:]] = b.Stats().KeyN
					stale = append(stale, []byte(n), iName(n[2:]))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, n := range stale {
			if err := tx.DeleteBucket(n); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
		}
		marks, err := tx.CreateBucketIfNotExists(ackedBucket)
		if err != nil {
			return err
		}
		for name := range orphans {
			if err := marks.Delete([]byte(name)); err != nil {
				return err
			}
		}
		for name, m := range max {
			q, err := tx.CreateBucketIfNotExists(qName(name))
			if err != nil {
				return err
			}
			if _, err := tx.CreateBucketIfNotExists(iName(name)); err != nil {
				return err
			}
			st := &spoolStats{max: m}
			err = q.ForEach(func(k, v []byte) error {
				st.n++
				st.bytes += int64(len(v)) + recordOverhead
				return nil
			})
			if err != nil {
				return err
			}
			s.sinks[name] = st
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("opening alert spool %s: %w", path, err)
	}
	return s, orphans, nil
}

// entry is one event to add to some sinks' queues.
type entry struct {
	sev   Severity
	data  []byte
	sinks []string
	// seqs, when not nil, receives the sequence number given in each sink's queue
	// (parallel to sinks; 0: it did not fit). Entries are copied on their way to the
	// writer; the slice is shared, so the caller sees what add wrote.
	seqs []uint64
}

// drop is an event that did not fit: either an older, less severe one pushed out, or
// the new one itself.
type drop struct {
	sink string
	sev  Severity
}

// add appends entries in one transaction (one fsync). When a sink's spool would go
// over its maximum, events less severe than the new one are dropped, least severe
// and oldest first; if none is less severe, the new event is dropped.
func (s *spool) add(entries []entry) (drops []drop, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delta := map[string]spoolStats{}
	err = s.db.Update(func(tx *bolt.Tx) error {
		drops = drops[:0]
		clear(delta)
		for _, e := range entries {
			for j, sink := range e.sinks {
				st := s.sinks[sink]
				d := delta[sink]
				q, idx := tx.Bucket(qName(sink)), tx.Bucket(iName(sink))
				// Keys only ever grow: fill pages instead of splitting them in half.
				q.FillPercent, idx.FillPercent = 0.95, 0.95
				cost := int64(len(e.data)) + 1 + recordOverhead
				fits := true
				for st.bytes+d.bytes+cost > st.max {
					k, _ := idx.Cursor().First()
					if k == nil || Severity(7-k[0]) <= e.sev {
						fits = false
						break
					}
					old := q.Get(k[1:])
					if err := idx.Delete(k); err != nil {
						return err
					}
					if old != nil {
						if err := q.Delete(k[1:]); err != nil {
							return err
						}
						d.n--
						d.bytes -= int64(len(old)) + recordOverhead
					}
					drops = append(drops, drop{sink, Severity(7 - k[0])})
				}
				if !fits {
					drops = append(drops, drop{sink, e.sev})
					delta[sink] = d
					continue
				}
				seq, err := q.NextSequence()
				if err != nil {
					return err
				}
				v := make([]byte, 0, len(e.data)+1)
				v = append(append(v, byte(e.sev)), e.data...)
				if err := q.Put(seqKey(seq), v); err != nil {
					return err
				}
				if err := idx.Put(idxKey(e.sev, seq), nil); err != nil {
					return err
				}
				if e.seqs != nil {
					e.seqs[j] = seq
				}
				d.n++
				d.bytes += cost
				delta[sink] = d
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("writing alert spool: %w", err)
	}
	for sink, d := range delta {
		st := s.sinks[sink]
		st.n += d.n
		st.bytes += d.bytes
	}
	return drops, nil
}

// read returns up to n events of sink with sequence numbers above after, in order,
// stopping early once maxBytes of JSON are gathered.
func (s *spool) read(sink string, after uint64, n int, maxBytes int) ([]record, error) {
	var out []record
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(qName(sink)).Cursor()
		size := 0
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < n && size < maxBytes; k, v = c.Next() {
			if len(k) != 8 || len(v) < 1 {
				continue // not ours; skip rather than fail delivery for good
			}
			out = append(out, record{seq: binary.BigEndian.Uint64(k), sev: Severity(v[0]), data: append([]byte(nil), v[1:]...)})
			size += len(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading alert spool of sink %s: %w", sink, err)
	}
	return out, nil
}

// remove deletes sink's events with sequence numbers up to and including upTo:
// they were delivered.
func (s *spool) remove(sink string, upTo uint64) error {
	_, err := s.settle(sink, upTo, 0)
	return err
}

// settle deletes sink's events up to and including upTo (delivered) and records
// that the receiver acknowledged those up to acked (0: none beyond upTo), in one
// commit. It returns how many events it deleted.
func (s *spool) settle(sink string, upTo, acked uint64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int
	var bytes int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		n, bytes = 0, 0
		q, idx := tx.Bucket(qName(sink)), tx.Bucket(iName(sink))
		c := q.Cursor()
		var keys [][]byte
		var sevs []Severity
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, v = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
			var sev Severity
			if len(v) > 0 {
				sev = Severity(v[0])
			}
			sevs = append(sevs, sev)
			n++
			bytes += int64(len(v)) + recordOverhead
		}
		for i, k := range keys {
			if err := q.Delete(k); err != nil {
				return err
			}
			if err := idx.Delete(idxKey(sevs[i], binary.BigEndian.Uint64(k))); err != nil {
				return err
			}
		}
		marks := tx.Bucket(ackedBucket)
		if acked <= upTo {
			return marks.Delete([]byte(sink))
		}
		return marks.Put([]byte(sink), seqKey(acked))
	})
	if err != nil {
		return 0, fmt.Errorf("removing delivered alerts from spool of sink %s: %w", sink, err)
	}
	st := s.sinks[sink]
	st.n -= n
	st.bytes -= bytes
	return n, nil
}

// acked returns the sequence number up to which sink's receiver acknowledged
// events that were not confirmed before the process ended (0 if none).
func (s *spool) acked(sink string) uint64 {
	var seq uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(ackedBucket).Get([]byte(sink)); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return seq
}

// dropAcked counts as delivered, and removes, what sink's receiver acknowledged
// before the previous process ended without confirming it (killed, or stopped
// while waiting for confirm): the receiver has it unless it lost it itself, and
// sending it again would duplicate it. It returns how many events it removed.
func (s *spool) dropAcked(sink string) (int, error) {
	seq := s.acked(sink)
	if seq == 0 {
		return 0, nil
	}
	return s.settle(sink, seq, 0)
}

// stats returns how many events and bytes sink's spool holds.
func (s *spool) stats(sink string) (n int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sinks[sink]
	return st.n, st.bytes
}

// oldest returns the @timestamp of sink's oldest spooled event (zero if none).
func (s *spool) oldest(sink string) time.Time {
	recs, err := s.read(sink, 0, 1, 1)
	if err != nil || len(recs) == 0 {
		return time.Time{}
	}
	var e struct {
		T time.Time `json:"@timestamp"`
	}
	_ = json.Unmarshal(recs[0].data, &e)
	return e.T
}

// fileSize is the spool file's size on disk.
func (s *spool) fileSize() int64 {
	var size int64
	_ = s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return size
}

func (s *spool) close() error { return s.db.Close() }
