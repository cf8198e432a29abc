// The guest agent (PID 1). Stub: replaced by the agent work.
import Glibc
print("ktstr-guest: stub")
