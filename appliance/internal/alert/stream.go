package alert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// What "delivered" means on a stream (syslog over TCP or TLS, JSON lines): plain
// syslog has no application-level acknowledgement, so a batch leaves the spool only
// when (1) the write succeeded, (2) the receiver's TCP stack acknowledged every byte
// of it (SIOCOUTQ, the unacknowledged bytes of the socket, reached the batch's end),
// and (3) the connection then stayed open for `confirm` without the receiver closing
// or resetting it. A receiver that exits with unread data resets the connection
// (which (3) catches) and one that stops gracefully closes it; on any such event
// everything not yet confirmed is sent again from the spool, in order. Duplicates
// are possible (at least once), losses only if the receiver acknowledged, kept the
// connection up for `confirm`, and then lost what it had accepted (its own queue).
var (
	errConnLost = errors.New("connection lost")
	errStalled  = errors.New("receiver not reading")
)

// userTimeout is how long sent data may stay unacknowledged before the kernel
// drops the connection (TCP_USER_TIMEOUT): a receiver that is gone without a reset
// (a network partition) or hung.
func userTimeout(cfg SinkConfig) time.Duration { return max(6*cfg.Timeout, 30*time.Second) }

func (r *runner) streamOnce(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	conn, err := r.stream.dial(dctx)
	cancel()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.conn = conn
	r.mu.Unlock()
	unwatch := context.AfterFunc(ctx, func() { conn.Close() }) // Close unblocks a write
	defer unwatch()
	defer func() {
		r.mu.Lock()
		r.conn = nil
		r.mu.Unlock()
		conn.Close()
	}()
	dead := make(chan error, 1)
	go func() { // receivers never send: any read result means the connection ended
		var b [256]byte
		_, err := conn.Read(b[:])
		if err == nil {
			err = errors.New("receiver sent data")
		}
		dead <- fmt.Errorf("%w: %v", errConnLost, err)
	}()
	return r.streamOn(ctx, conn, dead)
}

func (r *runner) streamOn(ctx context.Context, conn net.Conn, dead <-chan error) error {
	w := newAckWindow(r.cfg.Confirm, r.cfg.Timeout, streamWindow, streamUnacked, time.Now())
	var (
		buf     []byte
		poll    = time.NewTicker(ackPoll)
		done    []record // confirmed, not yet removed from the spool
		saved   uint64   // acknowledged mark in the spool
		savedAt time.Time
	)
	defer poll.Stop()
	// On the way out, remove what was confirmed. A lost connection may have lost
	// what it acknowledged: forget the mark before sending it again. When ctx ends
	// (Close) the mark stays, as after a crash.
	defer func() {
		lost := ctx.Err() == nil
		if len(done) == 0 && (!lost || saved == 0) {
			return
		}
		var upTo, mark uint64
		if len(done) > 0 {
			upTo = done[len(done)-1].seq
		}
		if !lost {
			mark = saved
		}
		if err := r.settled(done, upTo, mark); err != nil {
			r.log.Error("recording delivered alerts", "err", err)
		}
	}()
	// acks reads how much of the stream the receiver acknowledged.
	acks := func() error {
		if !w.pending() {
			return nil
		}
		unacked, err := outq(conn)
		if err != nil {
			return fmt.Errorf("checking acknowledged bytes: %w", err)
		}
		if w.update(unacked, time.Now()) {
			// Everything fit in the socket buffers, but the receiver does not take it.
			r.failed(fmt.Errorf("%w: nothing acknowledged for %v", errStalled, r.cfg.Timeout))
		}
		return nil
	}
	for {
		if err := acks(); err != nil {
			return err
		}
		// Write a batch if the window allows; confirm and record between batches,
		// so that a long backlog does not hold them back.
		wrote := false
		var limited <-chan time.Time // the rate limit lets the next alert go then
		n := 0
		if w.room() {
			if n = r.allowed(w.next); n == 0 {
				limited = time.After(r.limit.wait())
			}
		}
		if n > 0 {
			all, err := r.d.sp.read(r.cfg.Name, w.next, n, streamBatchBytes)
			if err != nil {
				return err
			}
			r.limit.take(len(all))
			if len(all) > 0 {
				if buf, err = r.writeBatch(conn, all, buf[:0]); err != nil {
					return err
				}
				w.wrote(all, len(buf), time.Now())
				wrote = true
				select {
				case err := <-dead:
					return err
				default:
				}
			}
		}
		// Confirm what was acknowledged and survived `confirm` on a connection still
		// up, and record how far the receiver acknowledged the rest: one commit per
		// ackPersist at most.
		select {
		case err := <-dead:
			return err
		default:
		}
		now := time.Now()
		freed := w.confirmed(now)
		done = append(done, freed...)
		mark := w.ackedSeq()
		if (len(done) > 0 || mark != saved) && now.Sub(savedAt) >= ackPersist {
			var upTo uint64
			if len(done) > 0 {
				upTo = done[len(done)-1].seq
			}
			if err := r.settled(done, upTo, mark); err != nil {
				return err
			}
			saved, savedAt, done = mark, now, done[:0]
		}
		if wrote || len(freed) > 0 {
			continue
		}
		var tick <-chan time.Time
		if w.pending() || len(done) > 0 {
			tick = poll.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-dead:
			if !w.pending() {
				if n, _ := r.d.sp.stats(r.cfg.Name); n == len(done) {
					return errIdleClosed
				}
			}
			return err
		case <-r.wake:
		case <-limited:
		case <-tick:
		}
	}
}

// writeBatch frames all after buf and writes them, returning what it wrote.
// Records that do not decode are skipped (and reported by decode).
func (r *runner) writeBatch(conn net.Conn, all []record, buf []byte) ([]byte, error) {
	recs, evs := r.decode(all)
	for i, e := range evs {
		buf = r.stream.frame(buf, e, recs[i].data)
	}
	// No write deadline: a timed-out TLS write leaves the connection unusable, and
	// reconnecting to a receiver that merely stopped reading would have it read the
	// old connection's data after the new one's. A write that blocks marks the sink
	// stalled; the kernel gives up on the connection after the TCP user timeout, and
	// Close unblocks it.
	stalled := time.AfterFunc(r.cfg.Timeout, func() {
		r.failed(fmt.Errorf("%w: write blocked for %v", errStalled, r.cfg.Timeout))
	})
	_, err := conn.Write(buf)
	stalled.Stop()
	if err != nil {
		return buf, fmt.Errorf("writing to %s: %w", r.cfg.Address, err)
	}
	return buf, nil
}

func dialer(cfg SinkConfig) (func(ctx context.Context) (net.Conn, error), error) {
	d := &net.Dialer{KeepAlive: 30 * time.Second, Control: tuneSocket(userTimeout(cfg))}
	if cfg.Transport != "tls" {
		return func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", cfg.Address)
		}, nil
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (net.Conn, error) {
		raw, err := d.DialContext(ctx, "tcp", cfg.Address)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, tc)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", cfg.Address, err)
		}
		return c, nil
	}, nil
}

// tlsConfig verifies the server by default (system roots or ca_file, against
// server_name or the address's host) and presents a client certificate if set.
func tlsConfig(cfg SinkConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if tc.ServerName == "" {
		host := cfg.Address
		if cfg.Type == TypeHTTP {
			host = ""
		} else if h, _, err := net.SplitHostPort(cfg.Address); err == nil {
			host = h
		}
		tc.ServerName = host
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func newSyslogStream(cfg SinkConfig) (*streamSink, error) {
	dial, err := dialer(cfg)
	if err != nil {
		return nil, err
	}
	f := newSyslogFormat(cfg)
	return &streamSink{dial: dial, frame: func(dst []byte, e *Event, raw []byte) []byte {
		return octetCount(dst, f.frame(e, raw))
	}}, nil
}

func newSyslogFormat(cfg SinkConfig) syslogFormat {
	return syslogFormat{facility: facilities[cfg.Facility], text: cfg.Message == "text", sdid: cfg.SDID,
		procid: strconv.Itoa(os.Getpid()), maxLen: cfg.MaxFrameLen}
}

// newJSONStream sends one ECS JSON document per line (JSON never holds a raw newline).
func newJSONStream(cfg SinkConfig) (*streamSink, error) {
	dial, err := dialer(cfg)
	if err != nil {
		return nil, err
	}
	return &streamSink{dial: dial, frame: func(dst []byte, e *Event, raw []byte) []byte {
		if !json.Valid(raw) {
			raw, _ = json.Marshal(e)
		}
		return append(append(dst, raw...), '\n')
	}}, nil
}
