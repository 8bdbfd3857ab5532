import Foundation
import Testing

@testable import ClusterManager

/// The embedded store's files and durability.
struct StoreTests {
    @Test func commitsAreDurableAndTheFilesAreRootsAlone() throws {
        let dir = NSTemporaryDirectory() + "ovlt-store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try SQLiteClusterStore(path: dir + "/overlayd.db")
        try store.put(.setting, "k", "v")
        // WAL with synchronous=FULL: an address given out is never rolled back by a power loss.
        let d = try store.durability()
        #expect(d.journalMode == "wal" && d.synchronous == 2, "\(d)")
        for file in ["overlayd.db", "overlayd.db-wal", "overlayd.db-shm"] {
            var st = stat()
            #expect(stat(dir + "/" + file, &st) == 0 && st.st_mode & 0o077 == 0, "\(file) \(String(st.st_mode & 0o777, radix: 8))")
        }
    }
}
