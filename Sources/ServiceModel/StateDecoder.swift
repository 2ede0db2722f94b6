/// Reads STATE text (what `kubectl get services,endpointslices,pods,nodes,servicecidrs -A -o yaml`
/// or `-o json` prints) into a validated `ClusterState`.
///
/// One bad object must never poison a sync (a kernel batch is all-or-nothing), so every object is
/// validated here, before any rule exists: a malformed one is left out whole and reported as a
/// `Problem` naming the object, the document and the field; everything else still decodes.

public enum StateDecoder {
    /// Lists at least this long are decoded in two halves on two threads (when there are two CPUs).
    static let parallelItems = 2000

    /// Decodes multi-document YAML, JSON (one value, or several one after another), `kind: List`
    /// (or any `…List`) and single objects.
    ///
    /// - Parameter source: where the text came from (a file name); problems carry it with the
    ///   document number so a user can find the object.
    public static func decode(_ text: String, source: String) -> ClusterState {
        // JSON has no `---` markers to split on, and reading it directly is many times faster than
        // libyaml. Text that turns out not to be JSON is read as YAML, as it always was.
        if JSONReader.looksLikeJSON(text), let documents = JSONReader.read(text) {
            return decode(documents, source: source)
        }
        return decodeYAML(text, source: source)
    }

    /// The top-level JSON values, numbered as YAML documents are.
    static func decode(_ documents: [Result<YAMLValue, JSONSyntaxError>], source: String) -> ClusterState {
        var builder = StateBuilder()
        for (index, document) in documents.enumerated() {
            switch document {
            case .success(let root): builder.add(Field(root), source: "\(source), document \(index + 1)")
            case .failure(let error): builder.report(nil, "\(source), document \(index + 1)", nil, "not valid JSON: \(error)")
            }
        }
        return builder.state
    }

    /// Any text, JSON included, read by libyaml one `---` document at a time.
    static func decodeYAML(_ text: String, source: String) -> ClusterState {
        var builder = StateBuilder()
        for document in YAMLDocument.split(text) {
            let location = "\(source), document \(document.number)"
            do {
                for root in try YAMLValue.documents(in: document.text) {
                    builder.add(Field(root), source: location)
                }
            } catch {
                builder.report(nil, location, nil, "not valid YAML or JSON: \(describeYAMLError(error, lineOffset: document.firstLine))")
            }
        }
        return builder.state
    }
}

/// One `---`-separated part of the text.
///
/// Documents are parsed one at a time so that a syntax error costs only its own document: libyaml
/// cannot resume after an error. A `---` at column 0 always starts a document in YAML (even inside a
/// block scalar), so splitting on those lines agrees with the parser.
struct YAMLDocument {
    var text: String
    /// Lines before this document in the whole text, to report absolute line numbers.
    var firstLine: Int
    /// 1-based, counting only documents with content.
    var number: Int

    static func split(_ text: String) -> [YAMLDocument] {
        // Lines are found in UTF-8 so that "\r\n" (one Character in Swift) still ends a line.
        let bytes = text.utf8
        var documents: [YAMLDocument] = []
        var start = bytes.startIndex  // of the current document
        var firstLine = 0
        var hasContent = false
        var lineStart = bytes.startIndex
        var lineNumber = 0
        func close(at end: String.Index) {
            guard hasContent else { return }
            documents.append(YAMLDocument(text: String(Substring(bytes[start..<end])), firstLine: firstLine, number: documents.count + 1))
        }
        while true {
            let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
            let line = Substring(bytes[lineStart..<lineEnd])
            // A marker after only blank lines, comments and directives belongs to the same document.
            if isDocumentStart(line) && hasContent {
                close(at: lineStart)
                start = lineStart
                firstLine = lineNumber
                hasContent = false
            }
            hasContent = hasContent || isContent(line)
            lineNumber += 1
            guard lineEnd < bytes.endIndex else { break }
            lineStart = bytes.index(after: lineEnd)
        }
        close(at: bytes.endIndex)
        return documents
    }

    private static func isDocumentStart(_ line: Substring) -> Bool {
        guard line.hasPrefix("---") else { return false }
        let rest = line.dropFirst(3)
        return rest.first.map { $0 == " " || $0 == "\t" || $0 == "\r" } ?? true
    }

    private static func isContent(_ line: Substring) -> Bool {
        let text = line.drop { $0 == " " || $0 == "\t" || $0 == "\r" }
        if text.isEmpty || text.hasPrefix("#") || line.hasPrefix("%") { return false }
        if isDocumentStart(line) {
            let rest = line.dropFirst(3).drop { $0 == " " || $0 == "\t" || $0 == "\r" }
            return !rest.isEmpty && !rest.hasPrefix("#")
        }
        return true
    }
}

/// Collects the objects and problems of one STATE text.
private struct StateBuilder {
    var state = ClusterState()

    mutating func report(_ object: ObjectRef?, _ source: String, _ field: String?, _ message: String, skipped: Bool = true) {
        state.problems.append(Problem(object: object, source: source, field: field, message: message, skipped: skipped))
    }

    /// Adds one document or list item. `listKind` is the enclosing `FooList`'s item kind and
    /// apiVersion: API-server lists leave them out of each item. `source` is spelled out only for
    /// a problem: most objects have none.
    mutating func add(_ object: Field, source: @autoclosure () -> String, listKind: (kind: String, apiVersion: String)? = nil) {
        if object.isAbsent { return }  // an empty document, e.g. after a trailing `---`
        guard object.isMapping else {
            report(nil, source(), nil, "expected a Kubernetes object (a mapping), got \(object.summary)")
            return
        }
        let kind: String
        let apiVersion: String
        do throws(FieldError) {
            kind = try object["kind"].string() ?? listKind?.kind ?? ""
            apiVersion = try object["apiVersion"].string() ?? listKind?.apiVersion ?? ""
        } catch {
            report(nil, source(), error.field, error.message)
            return
        }
        if kind.isEmpty {
            report(nil, source(), "kind", "is missing: not a Kubernetes object")
            return
        }
        if kind.hasSuffix("List") {
            addItems(of: object, kind: kind, apiVersion: apiVersion, source: source())
            return
        }
        switch (kind, apiVersion) {
        case ("Service", "v1"):
            if let service = decode(object, kind: kind, scope: .namespaced, source: source, ObjectDecoder.service) {
                state.services.append(service)
            }
        case ("EndpointSlice", "discovery.k8s.io/v1"):
            // Remember the owner even if the slice turns out invalid: its Service must not
            // silently fall back to endpoints derived from Pods.
            if let owner = try? object["metadata"]["labels"]["kubernetes.io/service-name"].string() {
                let namespace = (try? object["metadata"]["namespace"].string()) ?? nil
                state.servicesWithSlices.insert("\(namespace ?? "default")/\(owner)")
            }
            if let slice = decode(object, kind: kind, scope: .namespaced, source: source, ObjectDecoder.endpointSlice) {
                state.endpointSlices.append(slice)
            }
        case ("Pod", "v1"):
            if let pod = decode(object, kind: kind, scope: .namespaced, source: source, ObjectDecoder.pod) {
                state.pods.append(pod)
            }
        case ("Node", "v1"):
            if let node = decode(object, kind: kind, scope: .cluster, source: source, ObjectDecoder.node) {
                state.nodes.append(node)
            }
        case ("ServiceCIDR", "networking.k8s.io/v1"):
            if let serviceCIDR = decode(object, kind: kind, scope: .cluster, source: source, ObjectDecoder.serviceCIDR) {
                state.serviceCIDRs.append(serviceCIDR)
            }
        default:
            let version = apiVersion.isEmpty ? "no apiVersion" : "apiVersion \(apiVersion)"
            report(Self.ref(of: object, kind: kind, scope: .unknown), source(), nil,
                   "unknown kind \(kind) (\(version)), ignored", skipped: false)
        }
    }

    private mutating func addItems(of list: Field, kind: String, apiVersion: String, source: @autoclosure () -> String) {
        let items: [Field]
        do throws(FieldError) {
            items = try list["items"].list()
        } catch {
            report(nil, source(), error.field, error.message)
            return
        }
        // `ServiceList` items carry no kind; a plain `List` (what kubectl prints) names each one.
        let itemKind = kind == "List" ? nil : (kind: String(kind.dropLast(4)), apiVersion: apiVersion)
        let location = source()
        // A long list is decoded in two halves at once; the second half's objects and problems
        // follow the first's, as if read in one pass.
        let half = items.count >= StateDecoder.parallelItems && hasSeveralCPUs ? items.count / 2 : items.count
        let (_, rest) = inParallel(if: half < items.count) { () -> Void in
            addItems(items[..<half], kind: itemKind, source: location)
        } and: { () -> ClusterState in
            var builder = StateBuilder()
            builder.addItems(items[half...], kind: itemKind, source: location)
            return builder.state
        }
        state.merge(rest)
    }

    private mutating func addItems(_ items: ArraySlice<Field>, kind: (kind: String, apiVersion: String)?, source: String) {
        for index in items.indices {
            // Field paths start afresh in each item; the source names the item.
            add(items[index].asRoot, source: "\(source), items[\(index)]", listKind: kind)
        }
    }

    /// Runs one kind's decoder, turning its failure into a `Problem` about the object and its notes
    /// into `skipped: false` problems. A decoder returns nil for an object it ignores on purpose.
    private mutating func decode<Object>(
        _ object: Field, kind: String, scope: Scope, source: () -> String,
        _ decoder: (Field, inout [FieldError]) throws(FieldError) -> Object?
    ) -> Object? {
        // The object's name is read only for a problem: most objects have none.
        var notes: [FieldError] = []
        do throws(FieldError) {
            let decoded = try decoder(object, &notes)
            if !notes.isEmpty {
                let ref = Self.ref(of: object, kind: kind, scope: scope)
                for note in notes {
                    report(ref, source(), note.field, note.message, skipped: false)
                }
            }
            return decoded
        } catch {
            report(Self.ref(of: object, kind: kind, scope: scope), source(), error.field, error.message)
            return nil
        }
    }

    /// Where a kind's objects live, which decides the namespace a problem names.
    private enum Scope {
        /// Namespaced: a missing namespace means `default`, as for `kubectl apply`.
        case namespaced
        /// Cluster-scoped (Node, ServiceCIDR): no namespace.
        case cluster
        /// A kind this decoder does not know: the namespace as written.
        case unknown
    }

    /// The object's identity as far as it can be read, for naming it in a problem.
    private static func ref(of object: Field, kind: String, scope: Scope) -> ObjectRef {
        func text(_ key: StaticString) -> String {
            ((try? object["metadata"][key].string()) ?? nil) ?? ""
        }
        let namespace = switch scope {
        case .namespaced: text("namespace").isEmpty ? "default" : text("namespace")
        case .cluster: ""
        case .unknown: text("namespace")
        }
        return ObjectRef(kind: kind, namespace: namespace, name: text("name"))
    }
}
