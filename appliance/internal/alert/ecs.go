package alert

// ECSVersion is the Elastic Common Schema version the events' field names follow
// (ecs.version in every event; schema/event.schema.json and the index template).
const ECSVersion = "8.11.0"

// ECSMeta is ECS ecs.*.
type ECSMeta struct {
	Version string `json:"version"`
}
