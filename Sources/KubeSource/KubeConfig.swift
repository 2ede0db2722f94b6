internal import Foundation
internal import NIOSSL
internal import Yams

/// Where the API server is and how to prove who we are: read from a kubeconfig file (the
/// `current-context`'s cluster and user) or from a Pod's in-cluster environment.
///
/// Certificate and key files are read when the configuration is loaded, so a wrong path fails at
/// start with the file and field named; a token file is read again whenever it changes, because
/// projected service-account tokens are rotated under a running agent.
public struct KubeConfig: Sendable, Equatable {
    /// `https://host:port`, without a trailing slash.
    public var server: String
    /// PEM of the CA(s) that sign the server's certificate; nil: the system's trust store.
    public var certificateAuthority: PEM?
    public var insecureSkipTLSVerify: Bool
    /// `tls-server-name`: read, but not applied (async-http-client verifies against the URL's host).
    public var tlsServerName: String?
    public var clientCertificate: PEM?
    public var clientKey: PEM?
    public var token: Token?
    /// What this configuration was read from, for messages: the kubeconfig's path, or "in-cluster config".
    public var origin: String

    public init(server: String, certificateAuthority: PEM? = nil, insecureSkipTLSVerify: Bool = false,
                tlsServerName: String? = nil, clientCertificate: PEM? = nil, clientKey: PEM? = nil,
                token: Token? = nil, origin: String) {
        self.server = server
        self.certificateAuthority = certificateAuthority
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.tlsServerName = tlsServerName
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
        self.token = token
        self.origin = origin
    }

    /// PEM text and the field (or file) it came from, so a parse error can name it.
    public struct PEM: Sendable, Equatable {
        public var bytes: [UInt8]
        /// `users[nftproxy].user.client-key-data`, or `users[nftproxy].user.client-key (/path/key.pem)`.
        public var field: String

        public init(bytes: [UInt8], field: String) {
            self.bytes = bytes
            self.field = field
        }
    }

    /// A bearer token, inline or in a file that is re-read when it changes.
    public enum Token: Sendable, Equatable {
        case inline(String)
        case file(String)
    }

    /// The service-account directory of a Pod.
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"
}

/// A configuration that cannot be used, naming the file and the field (the CLI prints it and exits 2).
public struct KubeConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kubeconfig, certificate or token file, or "in-cluster config".
    public var file: String
    /// The field, as a path (`users[admin].user.client-key-data`), when one is at fault.
    public var field: String?
    public var message: String

    public init(file: String, field: String? = nil, message: String) {
        self.file = file
        self.field = field
        self.message = message
    }

    public var description: String {
        if let field { return "\(file): \(field): \(message)" }
        return "\(file): \(message)"
    }
}

// MARK: - Finding the configuration

extension KubeConfig {
    /// The configuration as kube-proxy finds it: `--kubeconfig` if given, else `$KUBECONFIG` (a
    /// colon-separated list; the first file that has a `current-context` decides), else the
    /// in-cluster environment. `master` (`--master`) replaces the server URL. `environment`:
    /// the process's, unless given.
    public static func resolve(
        kubeconfig: String?, master: String? = nil,
        environment: [String: String]? = nil,
        serviceAccountDirectory: String = KubeConfig.serviceAccountDirectory
    ) throws(KubeConfigError) -> KubeConfig {
        let environment = environment ?? ProcessInfo.processInfo.environment
        var config: KubeConfig
        if let kubeconfig, !kubeconfig.isEmpty {
            config = try load(path: kubeconfig)
        } else if let list = environment["KUBECONFIG"], !list.isEmpty {
            let paths = list.split(separator: ":").map(String.init).filter { !$0.isEmpty }
            config = try load(paths: paths)
        } else if environment["KUBERNETES_SERVICE_HOST"] != nil || master == nil {
            config = try inCluster(environment: environment, directory: serviceAccountDirectory)
        } else {
            config = KubeConfig(server: "", origin: "--master")
        }
        if let master, !master.isEmpty {
            config.server = try normalizedServer(master, file: "--master", field: nil)
        }
        return config
    }

    /// Reads one kubeconfig file.
    public static func load(path: String) throws(KubeConfigError) -> KubeConfig {
        try parse(readText(path, file: path, field: nil), path: path)
    }

    /// Reads `$KUBECONFIG`'s files: the first that sets `current-context` is used; its context,
    /// cluster and user are looked up in every file, the first file to define a name winning.
    static func load(paths: [String]) throws(KubeConfigError) -> KubeConfig {
        var files: [(path: String, document: Document)] = []
        for path in paths {
            // client-go skips files in the list that do not exist.
            guard FileManager.default.fileExists(atPath: path) else { continue }
            files.append((path, try document(readText(path, file: path, field: nil), path: path)))
        }
        guard let chosen = files.first(where: { !($0.document.currentContext ?? "").isEmpty }) else {
            throw KubeConfigError(file: paths.joined(separator: ":"), field: "current-context",
                                  message: "no file in $KUBECONFIG sets current-context")
        }
        var merged = chosen.document
        for (_, document) in files {
            merged.contexts = (merged.contexts ?? []) + (document.contexts ?? [])
            merged.clusters = (merged.clusters ?? []) + (document.clusters ?? [])
            merged.users = (merged.users ?? []) + (document.users ?? [])
        }
        return try config(from: merged, path: chosen.path)
    }

    /// Parses kubeconfig YAML. Relative file paths in it are relative to `path`'s directory.
    public static func parse(_ text: String, path: String) throws(KubeConfigError) -> KubeConfig {
        try config(from: document(text, path: path), path: path)
    }

    /// A Pod's configuration: `KUBERNETES_SERVICE_HOST`/`_PORT`, and the service account's
    /// `token` and `ca.crt` in `directory`.
    public static func inCluster(
        environment: [String: String]? = nil,
        directory: String = KubeConfig.serviceAccountDirectory
    ) throws(KubeConfigError) -> KubeConfig {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let origin = "in-cluster config"
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else {
            throw KubeConfigError(file: origin, field: "KUBERNETES_SERVICE_HOST",
                                  message: "is not set: not running in a Pod; pass --kubeconfig or --master")
        }
        guard let port = environment["KUBERNETES_SERVICE_PORT"], let number = UInt16(port), number > 0 else {
            throw KubeConfigError(file: origin, field: "KUBERNETES_SERVICE_PORT",
                                  message: "must be a port number, got \(environment["KUBERNETES_SERVICE_PORT"].map { "\"\($0)\"" } ?? "nothing")")
        }
        let tokenPath = (directory as NSString).appendingPathComponent("token")
        let caPath = (directory as NSString).appendingPathComponent("ca.crt")
        _ = try readText(tokenPath, file: tokenPath, field: nil)  // fail now, not at the first request
        let ca = try readBytes(caPath, file: caPath, field: nil)
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let config = KubeConfig(server: "https://\(hostPart):\(number)", certificateAuthority: PEM(bytes: ca, field: caPath),
                                token: .file(tokenPath), origin: origin)
        _ = try config.tlsConfiguration()
        return config
    }
}

// MARK: - The kubeconfig document

extension KubeConfig {
    struct Document: Decodable {
        var currentContext: String?
        var contexts: [Named<Context>]?
        var clusters: [Named<Cluster>]?
        var users: [Named<User>]?

        enum CodingKeys: String, CodingKey {
            case currentContext = "current-context", contexts, clusters, users
        }
    }

    struct Named<Value: Decodable>: Decodable {
        var name: String
        var value: Value?

        struct Keys: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Keys.self)
            name = try container.decode(String.self, forKey: Keys(stringValue: "name"))
            let key = Keys(stringValue: String(describing: Value.self).lowercased())
            value = try container.decodeIfPresent(Value.self, forKey: key)
        }
    }

    struct Context: Decodable {
        var cluster: String?
        var user: String?
    }

    struct Cluster: Decodable {
        var server: String?
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?
        var tlsServerName: String?

        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
            case tlsServerName = "tls-server-name"
        }
    }

    struct User: Decodable {
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var token: String?
        var tokenFile: String?
        var exec: Present?
        var authProvider: Present?
        var username: String?

        enum CodingKeys: String, CodingKey {
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case token, tokenFile, exec, username
            case authProvider = "auth-provider"
        }
    }

    /// A field whose presence matters, whatever it holds.
    struct Present: Decodable {
        init(from decoder: any Decoder) throws {}
    }

    static func document(_ text: String, path: String) throws(KubeConfigError) -> Document {
        do {
            return try YAMLDecoder().decode(Document.self, from: text)
        } catch let error as DecodingError {
            throw describe(error, path: path)
        } catch {
            throw KubeConfigError(file: path, message: "not valid YAML: \(error)")
        }
    }

    private static func describe(_ error: DecodingError, path: String) -> KubeConfigError {
        func field(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }.joined()
                .trimmingCharacters(in: CharacterSet(charactersIn: "."))
        }
        switch error {
        case .typeMismatch(let type, let context):
            return KubeConfigError(file: path, field: field(context.codingPath), message: "expected \(describeType(type))")
        case .valueNotFound(let type, let context):
            return KubeConfigError(file: path, field: field(context.codingPath), message: "expected \(describeType(type)), got null")
        case .keyNotFound(let key, let context):
            return KubeConfigError(file: path, field: field(context.codingPath + [key]), message: "is missing")
        case .dataCorrupted(let context):
            return KubeConfigError(file: path, field: context.codingPath.isEmpty ? nil : field(context.codingPath),
                                   message: "not a valid kubeconfig: \(context.debugDescription)")
        @unknown default:
            return KubeConfigError(file: path, message: "not a valid kubeconfig: \(error)")
        }
    }

    private static func describeType(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Array<Any>.Type: "a list"
        default: "a \(type)"
        }
    }

    static func config(from document: Document, path: String) throws(KubeConfigError) -> KubeConfig {
        guard let contextName = document.currentContext, !contextName.isEmpty else {
            throw KubeConfigError(file: path, field: "current-context", message: "is not set")
        }
        guard let context = document.contexts?.first(where: { $0.name == contextName }) else {
            throw KubeConfigError(file: path, field: "current-context", message: "names context \"\(contextName)\", which is not in contexts")
        }
        let contextField = "contexts[\(contextName)].context"
        guard let clusterName = context.value?.cluster, !clusterName.isEmpty else {
            throw KubeConfigError(file: path, field: "\(contextField).cluster", message: "is not set")
        }
        guard let cluster = document.clusters?.first(where: { $0.name == clusterName })?.value else {
            throw KubeConfigError(file: path, field: "\(contextField).cluster", message: "names cluster \"\(clusterName)\", which is not in clusters")
        }
        let clusterField = "clusters[\(clusterName)].cluster"
        guard let server = cluster.server, !server.isEmpty else {
            throw KubeConfigError(file: path, field: "\(clusterField).server", message: "is not set")
        }
        let base = (path as NSString).deletingLastPathComponent
        var config = KubeConfig(server: try normalizedServer(server, file: path, field: "\(clusterField).server"),
                                origin: path)
        config.insecureSkipTLSVerify = cluster.insecureSkipTLSVerify ?? false
        config.tlsServerName = cluster.tlsServerName
        config.certificateAuthority = try pem(data: cluster.certificateAuthorityData, file: cluster.certificateAuthority,
                                              field: "\(clusterField).certificate-authority", path: path, base: base)

        if let userName = context.value?.user, !userName.isEmpty {
            guard let user = document.users?.first(where: { $0.name == userName }) else {
                throw KubeConfigError(file: path, field: "\(contextField).user", message: "names user \"\(userName)\", which is not in users")
            }
            let userField = "users[\(userName)].user"
            let settings = user.value ?? User()
            if settings.exec != nil {
                throw KubeConfigError(file: path, field: "\(userField).exec",
                                      message: "exec credential plugins are not supported; use a client certificate or a token")
            }
            if settings.authProvider != nil {
                throw KubeConfigError(file: path, field: "\(userField).auth-provider",
                                      message: "auth providers are not supported; use a client certificate or a token")
            }
            config.clientCertificate = try pem(data: settings.clientCertificateData, file: settings.clientCertificate,
                                               field: "\(userField).client-certificate", path: path, base: base)
            config.clientKey = try pem(data: settings.clientKeyData, file: settings.clientKey,
                                       field: "\(userField).client-key", path: path, base: base)
            switch (config.clientCertificate, config.clientKey) {
            case (.some, nil):
                throw KubeConfigError(file: path, field: "\(userField).client-key", message: "is missing: client-certificate needs a key")
            case (nil, .some):
                throw KubeConfigError(file: path, field: "\(userField).client-certificate", message: "is missing: client-key needs a certificate")
            default:
                break
            }
            if let token = settings.token, !token.isEmpty {
                config.token = .inline(token)
            } else if let file = settings.tokenFile, !file.isEmpty {
                let resolved = absolute(file, base: base)
                _ = try readText(resolved, file: path, field: "\(userField).tokenFile")
                config.token = .file(resolved)
            }
        }
        _ = try config.tlsConfiguration()
        return config
    }

    /// `X-data` (base64) wins over `X` (a file path), as in client-go.
    private static func pem(data: String?, file: String?, field: String, path: String, base: String) throws(KubeConfigError) -> PEM? {
        if let data, !data.isEmpty {
            let compact = data.filter { !$0.isWhitespace }
            guard let bytes = Data(base64Encoded: compact) else {
                throw KubeConfigError(file: path, field: field + "-data", message: "is not valid base64")
            }
            return PEM(bytes: Array(bytes), field: field + "-data")
        }
        if let file, !file.isEmpty {
            let resolved = absolute(file, base: base)
            return PEM(bytes: try readBytes(resolved, file: path, field: field), field: "\(field) (\(resolved))")
        }
        return nil
    }

    private static func absolute(_ file: String, base: String) -> String {
        file.hasPrefix("/") || base.isEmpty ? file : (base as NSString).appendingPathComponent(file)
    }

    static func normalizedServer(_ server: String, file: String, field: String?) throws(KubeConfigError) -> String {
        var text = server
        if !text.contains("://") { text = "https://" + text }
        guard let url = URL(string: text), let scheme = url.scheme, ["https", "http"].contains(scheme), url.host != nil else {
            throw KubeConfigError(file: file, field: field, message: "\"\(server)\" is not an http(s) URL")
        }
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }

    static func readBytes(_ path: String, file: String, field: String?) throws(KubeConfigError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let why = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
            if file == path { throw KubeConfigError(file: file, field: field, message: "\(why)") }
            throw KubeConfigError(file: file, field: field, message: "file \(path) \(why)")
        }
        return Array(data)
    }

    static func readText(_ path: String, file: String, field: String?) throws(KubeConfigError) -> String {
        let bytes = try readBytes(path, file: file, field: field)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw KubeConfigError(file: file, field: field, message: "\(path) is not UTF-8 text")
        }
        return text
    }
}

// MARK: - TLS

extension KubeConfig {
    /// The TLS settings this configuration asks for; fails naming the field whose PEM is bad.
    func tlsConfiguration() throws(KubeConfigError) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if insecureSkipTLSVerify {
            tls.certificateVerification = .none
        } else if let ca = certificateAuthority {
            tls.trustRoots = .certificates(try certificates(ca))
        }
        if let certificate = clientCertificate, let key = clientKey {
            tls.certificateChain = try certificates(certificate).map { .certificate($0) }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: key.bytes, format: .pem))
            } catch {
                throw KubeConfigError(file: origin, field: key.field, message: "not a PEM private key (\(error))")
            }
        }
        return tls
    }

    private func certificates(_ pem: PEM) throws(KubeConfigError) -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(pem.bytes)
        } catch {
            throw KubeConfigError(file: origin, field: pem.field, message: "not a PEM certificate (\(error))")
        }
        guard !certificates.isEmpty else {
            throw KubeConfigError(file: origin, field: pem.field, message: "holds no PEM certificate")
        }
        return certificates
    }
}
