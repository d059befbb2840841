package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// httpSink POSTs batches in Elasticsearch _bulk format (NDJSON): for each event an
// action line {"create":{"_index":INDEX,"_id":EVENT.ID}} and the event. "create"
// with the event id makes a re-sent event a 409 conflict instead of a duplicate, so
// at-least-once delivery stays exactly-once in the index (and works with data
// streams, which only accept create).
//
// The response decides: HTTP 2xx with "errors": false → all delivered. With
// "errors": true each item is judged: 2xx and 409 delivered; 429 and 5xx stop the
// batch there (that item and the rest are retried after backoff); any other 4xx is a
// permanent refusal (mapping error): the event is dropped, logged and counted.
// A non-2xx status for the whole request retries the whole batch; 413 (too large)
// halves the events a request first, and drops an event too large on its own.
type httpSink struct {
	cfg    SinkConfig
	client *http.Client
	auth   string
	limit  int // events a request, lowered by 413 answers (one runner calls send)
}

func newHTTPSink(cfg SinkConfig) (*httpSink, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // alerts go straight to the SIEM; a proxy from the environment is a surprise here
	if strings.HasPrefix(cfg.URL, "https:") {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	}
	s := &httpSink{cfg: cfg, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
	switch {
	case cfg.APIKeyFile != "":
		key, err := os.ReadFile(cfg.APIKeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading api_key_file: %w", err)
		}
		s.auth = "ApiKey " + strings.TrimSpace(string(key))
	case cfg.PasswordFile != "":
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading password_file: %w", err)
		}
		req, _ := http.NewRequest("POST", "http://x/", nil)
		req.SetBasicAuth(cfg.Username, strings.TrimRight(string(pw), "\r\n"))
		s.auth = req.Header.Get("Authorization")
	}
	return s, nil
}

type bulkResponse struct {
	Errors bool                        `json:"errors"`
	Items  []map[string]bulkItemResult `json:"items"`
}

type bulkItemResult struct {
	Status int             `json:"status"`
	Error  json.RawMessage `json:"error"`
}

func (s *httpSink) send(ctx context.Context, recs []record, evs []*Event) (int, []int, error) {
	if s.limit > 0 && len(recs) > s.limit {
		recs, evs = recs[:s.limit], evs[:s.limit]
	}
	var body bytes.Buffer
	for i, e := range evs {
		action, _ := json.Marshal(map[string]map[string]string{"create": {"_index": s.cfg.Index, "_id": e.Event.ID}})
		body.Write(action)
		body.WriteByte('\n')
		body.Write(recs[i].data)
		body.WriteByte('\n')
	}
	req, err := http.NewRequestWithContext(ctx, "POST", s.cfg.URL, &body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("reading _bulk response: %w", err)
	}
	if resp.StatusCode == http.StatusRequestEntityTooLarge {
		if len(recs) == 1 {
			return 1, []int{0}, nil // this event alone is too big for the receiver: never deliverable
		}
		s.limit = len(recs) / 2
		return 0, nil, fmt.Errorf("POST %s: HTTP 413: sending %d events a request from now on", s.cfg.URL, s.limit)
	}
	if resp.StatusCode/100 != 2 {
		return 0, nil, fmt.Errorf("POST %s: HTTP %d: %s", s.cfg.URL, resp.StatusCode, snippet(data))
	}
	var br bulkResponse
	if err := json.Unmarshal(data, &br); err != nil {
		return 0, nil, fmt.Errorf("POST %s: response is not a _bulk response: %w", s.cfg.URL, err)
	}
	if !br.Errors {
		return len(recs), nil, nil
	}
	if len(br.Items) != len(recs) {
		return 0, nil, fmt.Errorf("POST %s: %d items in the response for %d sent", s.cfg.URL, len(br.Items), len(recs))
	}
	var rejected []int
	for i, item := range br.Items {
		var res bulkItemResult
		for _, v := range item {
			res = v
		}
		switch st := res.Status; {
		case st/100 == 2 || st == http.StatusConflict:
		case st == http.StatusTooManyRequests || st >= 500:
			return i, rejected, fmt.Errorf("POST %s: item %d: HTTP %d: %s", s.cfg.URL, i, st, snippet(res.Error))
		default:
			rejected = append(rejected, i)
		}
	}
	return len(recs), rejected, nil
}

func snippet(b []byte) string {
	if len(b) > 300 {
		b = b[:300]
	}
	return string(b)
}

func (s *httpSink) close() error {
	s.client.CloseIdleConnections()
	return nil
}
