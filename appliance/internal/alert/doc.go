// Package alert turns findings into alert events and delivers them, durably, to any
// number of sinks: RFC 5424 syslog over UDP, TCP and TLS, JSON lines over TCP or TLS,
// Elasticsearch _bulk over HTTP(S), the systemd journal and a local JSON-lines file.
//
// # Events
//
// One Event type, in Elastic Common Schema (ECS 8) field names, covers memory matches,
// file matches, file-integrity changes, rule errors and appliance health. Build them
// with FromFinding, RuleError and Health; the Dispatcher fills observer.* and any
// missing @timestamp or event.id. The JSON struct tags of Event and its parts are the
// schema; the field table in README.md documents every field, and TestSchemaDocumented
// checks the table against the tags. FromFinding maps a finding's typed fields
// (detectors.Finding: rule, matches, file description, attribute changes, process)
// straight to their fields, with no string parsed back.
//
// # Severity
//
// Five levels, each a syslog severity: critical (2), high (3, err), medium
// (4, warning), low (5, notice), info (6). A rule match takes its rule's meta
// "severity" (a name, or 1-5 with 5 most severe), else meta "score" (0-100:
// >=90 critical, >=70 high, >=40 medium, >=20 low), else medium; a finding that went
// away or was retired is low. An integrity change takes the class of its path (PathSeverity): high
// for boot, binaries, libraries, accounts, authentication and persistence paths
// (/boot, /bin, /usr/bin, /lib, /etc/passwd, /etc/shadow, /etc/sudoers, /etc/ssh,
// /etc/pam.d, /etc/systemd, cron, /root/.ssh, ld.so.preload, ...), medium for the
// rest of /etc, /root, /usr, /opt, /var/lib, /home, low elsewhere; a policy may set
// meta "severity" instead. Rule errors are high. Health alerts carry the severity the
// caller gives (a full spool: high).
//
// # Delivery
//
// Emit returns once the event is committed to the spool (a bbolt file in the state
// folder; concurrent Emits share one fsync). It never waits for a sink. Each sink has
// its own queue in the spool and its own delivery loop, in acceptance order, with
// exponential backoff (jittered) between failed attempts. An event leaves a sink's
// queue only when it was delivered:
//
//   - TCP and TLS streams: written, acknowledged by the receiver's TCP stack
//     (SIOCOUTQ), and the connection then stayed up for `confirm` (default 1s). A
//     lost connection re-sends everything not confirmed, in order. At most 256 KiB
//     wait for the acknowledgement, and the spool records, at most 25ms behind, how
//     far it reached: a new process (after kill -9, or a stop) counts that as
//     delivered, so a crash re-sends only the last few hundred KiB at most.
//   - UDP: the datagram was sent (no acknowledgement exists; loss is possible).
//   - HTTP: the _bulk response said so per item (409 counts: already indexed, so a
//     re-sent event never makes a second document: the event id is the _id).
//   - journal: the datagram was sent; file: written and fsynced.
//
// A stream whose receiver stops reading is kept (a new connection could be read
// before the old one): the sink reports "receiver not reading" after `timeout`, and
// the kernel drops the connection once data stays unacknowledged for 6×timeout (at
// least 30s, TCP_USER_TIMEOUT).
//
// So delivery is at least once, in order per sink, across sink outages and kill -9
// of the supervisor: after a failure some events arrive twice (each re-send is a
// contiguous run, in order). An event is lost only if the receiver acknowledged it,
// kept the connection up for `confirm`, and then lost it itself; if the supervisor
// died after the receiver acknowledged it and the receiver lost it within `confirm`;
// or if it was dropped from a full spool.
//
// Each sink's spool is bounded by spool_max_bytes (JSON bytes plus a per-event
// overhead; the file can be somewhat larger and does not shrink, bbolt reuses its
// free pages). When an event does not fit, less severe events are dropped, least
// severe and oldest first; if none is less severe, the new event is dropped. Every
// drop is logged and counted (domainm_alerts_dropped_total{reason="spool_full"}),
// and a high "alert-spool-full" health alert goes to all sinks, at most once a
// minute per sink.
//
// # Metrics
//
// domainm_alerts_emitted_total{sink,severity}, domainm_alerts_delivered_total{sink,severity},
// domainm_alert_delivery_failures_total{sink,reason}, domainm_alerts_dropped_total{sink,severity,reason},
// domainm_alert_sink_up{sink}, domainm_alert_spool_events{sink}, domainm_alert_spool_bytes{sink},
// domainm_alert_spool_max_bytes{sink}, domainm_alert_spool_oldest_seconds{sink},
// domainm_alert_spool_file_bytes.
//
// Close first lets the sinks deliver for up to 2s, so that a clean stop does not
// re-send; what is still unconfirmed stays spooled and is sent at the next start.
//
// README.md beside this file documents the sinks' configuration and wire formats.
package alert
