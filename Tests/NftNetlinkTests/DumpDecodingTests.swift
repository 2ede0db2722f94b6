import NftIR
@testable import NftNetlink
import ServiceModel
import Testing

/// The pieces a read-back decodes a dump with, apart from the kernel: register constants held
/// inline, expression names told apart by their bytes, and statements checked against the dump
/// as they are lowered.
struct DumpDecodingTests {
    private func value(_ bytes: [UInt8]) -> RegisterValue? {
        bytes.withUnsafeBytes { RegisterValue($0) }
    }

    @Test func registerValuesHoldOneToSixteenBytes() throws {
        #expect(value([]) == nil)
        #expect(value([UInt8](repeating: 1, count: 17)) == nil)
        let sixteen = Array(UInt8(1)...16)
        #expect(try #require(value(sixteen)).elementsEqual(sixteen))
        // The length is part of the value: a 1-byte zero is not a 2-byte one.
        #expect(value([0]) != value([0, 0]))
        #expect(value([0, 22]) == [0, 22])
        #expect(value([0, 22]) != [0, 23])
        #expect(Set([value([6]), value([6]), value([6, 0]), RegisterValue(byte: 6)]).count == 2)
        // The same constant, lowered or dumped, is the same value.
        #expect(value([172, 16, 0, 0]) == RegisterValue(IPAddress("172.16.0.0")!))
        #expect(value([0, 80]) == RegisterValue(port: 80))
    }

    @Test func addressesFromRegisterValues() throws {
        for text in ["10.1.2.3", "255.0.0.1", "fd00:10::3", "2001:db8:ffff::1"] {
            let address = IPAddress(text)!
            #expect(IPAddress(bytes: RegisterValue(address)) == address)
            #expect(IPAddress(bytes: try #require(value(address.bytes))) == IPAddress(bytes: address.bytes))
        }
        #expect(IPAddress(bytes: RegisterValue(port: 80)) == nil)
        #expect(IPAddress(bytes: try #require(value([10, 0, 0, 1, 0]))) == nil)
    }

    @Test func expressionNamesAreToldApartByEveryByte() {
        func kind(_ name: String) -> ExpressionKind? {
            Array(name.utf8).withUnsafeBytes { ExpressionKind(name: $0) }
        }
        for expected in ExpressionKind.allCases {
            #expect(kind(expected.rawValue) == expected)
        }
        // Names differing only in their last byte (the ninth, of two words), their length or case.
        for foreign in ["immediatf", "byteordex", "immediate0", "cm", "cmpx", "CMP", "", "counter", "payload-set", "0123456789abcdefg"] {
            #expect(kind(foreign) == nil, "\(foreign)")
        }
    }

    /// A dumped rule that ends inside a statement, or goes on past its last one, is not one
    /// nftproxy writes; one that ends between statements is those statements.
    @Test(arguments: Family.allCases)
    func rulesCutShortOrRunningOnAreRefused(_ family: Family) throws {
        let table = Samples.table(family)
        let sets = SetCatalog(table.sets)
        for chain in table.chains {
            for rule in chain.rules {
                let expressions = try Lowering.rule(rule, family: family, sets: sets).map(\.normalized)
                var ends: [Int: Int] = [:]  // expressions before the end of each statement -> statements
                var count = 0
                for (index, statement) in rule.statements.enumerated() {
                    count += try Lowering.statement(statement, family: family, sets: sets).count
                    ends[count] = index + 1
                }
                for length in 1..<expressions.count {
                    let raised = Raising.rule(Array(expressions.prefix(length)), family: family, sets: sets)
                    if let statements = ends[length] {
                        #expect(raised == Array(rule.statements.prefix(statements)), "\(rule.statements) cut after \(length)")
                    } else {
                        #expect(raised == nil, "\(rule.statements) cut after \(length)")
                    }
                }
                // One expression of a next statement that is not there.
                let runningOn = expressions + [expressions.first { if case .payload = $0 { true } else { false } } ?? .meta(key: 16, dreg: 1)]
                #expect(Raising.rule(runningOn, family: family, sets: sets) == nil, "\(rule.statements)")
            }
        }
    }
}
