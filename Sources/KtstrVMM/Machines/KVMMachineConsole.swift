import Foundation
import KtstrMachine

/// Collects a guest's console bytes (from any thread) and lets a caller wait for a text to
/// appear, with a deadline. Keeps the newest `capacity` bytes; `tail` is what a failure
/// report shows. Not tied to a backend: any `ByteSink` producer can feed it.
public final class ConsoleRecorder: @unchecked Sendable {
    private let lock = NSCondition()
    private var buffer: [UInt8] = []
    private var droppedBytes = 0
    /// Bytes appended so far, dropped ones included (positions for `waitFor`).
    private var total = 0
    private var closed = false
    private let capacity: Int
    private let forward: ByteSink?
    public let started = ContinuousClock.now

    /// `forward` also receives every byte (e.g. stdout), on the producer's thread.
    public init(capacity: Int = 8 << 20, forward: ByteSink? = nil) {
        self.capacity = max(4096, capacity)
        self.forward = forward
    }

    public var sink: ByteSink { { [self] in self.append($0) } }

    public func append(_ bytes: ArraySlice<UInt8>) {
        guard !bytes.isEmpty else { return }
        forward?(bytes)
        lock.lock()
        buffer += bytes
        total += bytes.count
        if buffer.count > capacity {
            let cut = buffer.count - capacity
            buffer.removeFirst(cut)
            droppedBytes += cut
        }
        lock.broadcast()
        lock.unlock()
    }

    /// No more bytes will come (the machine stopped): wake waiters so they can give up.
    public func close() {
        lock.lock(); closed = true; lock.broadcast(); lock.unlock()
    }

    public var text: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: buffer, as: UTF8.self)
    }

    /// The last `maxLines` lines (at most 16 KiB), for error messages.
    public func tail(maxLines: Int = 40) -> String {
        lock.lock()
        let b = buffer.suffix(16 << 10)
        lock.unlock()
        let lines = String(decoding: b, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        return lines.suffix(maxLines).joined(separator: "\n")
    }

    public enum WaitResult: Sendable, Equatable {
        /// Found; `elapsed` counts from the recorder's creation to the wakeup that saw it.
        case found(elapsed: Duration)
        case timedOut
        /// `close()` was called (the machine stopped) before the text appeared.
        case closed
    }

    /// Blocks until `text` occurs at or after byte position `from` (0: anywhere), the
    /// deadline passes, or the recorder is closed.
    public func waitFor(_ text: String, from: Int = 0, timeout: Duration) -> WaitResult {
        let needle = Array(text.utf8)
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        lock.lock(); defer { lock.unlock() }
        var searchedUpTo = from
        while true {
            let startPos = max(from, searchedUpTo - needle.count + 1, droppedBytes)
            if startPos - droppedBytes < buffer.count,
               Self.find(needle, in: buffer[(startPos - droppedBytes)...]) != nil {
                return .found(elapsed: ContinuousClock.now - started)
            }
            searchedUpTo = total
            if closed { return .closed }
            if Date() >= deadline { return .timedOut }
            _ = lock.wait(until: min(deadline, Date().addingTimeInterval(0.25)))
        }
    }

    /// Byte position of the end of what has been recorded so far.
    public var position: Int { lock.lock(); defer { lock.unlock() }; return total }

    static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Int? {
        guard !needle.isEmpty else { return hay.startIndex }
        guard hay.count >= needle.count else { return nil }
        var i = hay.startIndex
        let last = hay.endIndex - needle.count
        while i <= last {
            if hay[i] == needle[0], hay[i..<i + needle.count].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
