internal import Foundation
internal import Synchronization

/// The bearer token to send. A token file is read again whenever its modification time, size
/// or inode changes (a projected service-account token is replaced by a rename), so rotation
/// needs no restart and costs one `stat` per request.
final class BearerToken: Sendable {
    private struct FileStamp: Equatable {
        var modified: Date?
        var size: Int?
        var inode: Int?
    }

    private let source: KubeConfig.Token
    private let cache = Mutex<(stamp: FileStamp?, token: String)?>(nil)

    init(_ source: KubeConfig.Token) {
        self.source = source
    }

    /// The token as it is now; a file that vanished or emptied keeps the last token read.
    func current() throws(KubeSourceError) -> String {
        switch source {
        case .inline(let token):
            return token
        case .file(let path):
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let stamp = attributes.map {
                FileStamp(modified: $0[.modificationDate] as? Date, size: ($0[.size] as? NSNumber)?.intValue,
                          inode: ($0[.systemFileNumber] as? NSNumber)?.intValue)
            }
            if let cached = cache.withLock({ $0 }), stamp == nil || cached.stamp == stamp {
                return cached.token
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw KubeSourceError.configuration("token file \(path) cannot be read")
            }
            let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if token.isEmpty, let cached = cache.withLock({ $0 }) { return cached.token }
            cache.withLock { $0 = (stamp, token) }
            return token
        }
    }
}
