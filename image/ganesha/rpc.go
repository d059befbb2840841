package ganesha

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// nfsProgram is ONC RPC program 100003 (NFS).
const nfsProgram = 100003

// MismatchError is a server's answer that it does not serve the asked NFS version,
// with the versions it serves.
type MismatchError struct{ Asked, Low, High uint32 }

func (e *MismatchError) Error() string {
	return fmt.Sprintf("NFS version %d not served (versions %d to %d are)", e.Asked, e.Low, e.High)
}

// Ping sends the NFS NULL procedure for version vers over TCP to addr and checks that
// the server accepts it: the cheapest proof that an NFS server answers, without a
// kernel NFS client.
func Ping(ctx context.Context, addr string, vers uint32) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("NFS NULL call to %s: %w", addr, err)
	}
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	c.SetDeadline(deadline)
	const xid = 0x646d6e66
	if _, err := c.Write(nullCall(xid, vers)); err != nil {
		return fmt.Errorf("NFS NULL call to %s: %w", addr, err)
	}
	rec, err := readRecord(c)
	if err != nil {
		return fmt.Errorf("NFS NULL reply from %s: %w", addr, err)
	}
	return parseReply(rec, xid, vers)
}

// nullCall is one record-marked RPC call: procedure 0, AUTH_NONE credentials and verifier.
func nullCall(xid, vers uint32) []byte {
	words := []uint32{0x80000000 | 40, xid, 0 /* CALL */, 2 /* RPC version */, nfsProgram, vers, 0 /* NULL */, 0, 0, 0, 0}
	b := make([]byte, 0, 4*len(words))
	for _, w := range words {
		b = binary.BigEndian.AppendUint32(b, w)
	}
	return b
}

// maxReply bounds a reply record: a NULL reply is a few dozen bytes.
const maxReply = 4096

func readRecord(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:]) &^ 0x80000000
	if n > maxReply {
		return nil, fmt.Errorf("reply record of %d bytes (more than %d)", n, maxReply)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

var errShortReply = errors.New("short RPC reply")

// parseReply checks an RPC reply: xid, REPLY, MSG_ACCEPTED, then the accept status
// after the verifier.
func parseReply(b []byte, xid, vers uint32) error {
	word := func(i int) (uint32, error) {
		if len(b) < 4*(i+1) {
			return 0, errShortReply
		}
		return binary.BigEndian.Uint32(b[4*i:]), nil
	}
	hdr := make([]uint32, 5) // xid, msg type, reply stat, verifier flavor, verifier length
	for i := range hdr {
		w, err := word(i)
		if err != nil {
			return err
		}
		hdr[i] = w
	}
	switch {
	case hdr[0] != xid:
		return fmt.Errorf("RPC reply for xid %#x, asked %#x", hdr[0], xid)
	case hdr[1] != 1:
		return fmt.Errorf("RPC message type %d, not a reply", hdr[1])
	case hdr[2] != 0:
		return fmt.Errorf("RPC call denied (reply status %d)", hdr[2])
	case hdr[4] > 400:
		return fmt.Errorf("RPC verifier of %d bytes", hdr[4])
	}
	at := 5 + int(hdr[4]+3)/4
	st, err := word(at)
	if err != nil {
		return err
	}
	switch st {
	case 0:
		return nil
	case 2: // PROG_MISMATCH: low and high follow
		lo, err1 := word(at + 1)
		hi, err2 := word(at + 2)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		return &MismatchError{Asked: vers, Low: lo, High: hi}
	}
	return fmt.Errorf("RPC accept status %d", st)
}
