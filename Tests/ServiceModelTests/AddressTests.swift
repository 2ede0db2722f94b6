import Testing
@testable import ServiceModel

/// Address parsing: every form Kubernetes accepts, canonicalised; everything else refused.
@Suite struct AddressTests {
    @Test(arguments: [
        ("10.0.0.1", "10.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("010.001.00.9", "10.1.0.9"),
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("fd00::0010", "fd00::10"),
        ("FD00:0:0:0:0:0:0:1", "fd00::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("1:2:3:4:5:6::8", "1:2:3:4:5:6:0:8"),
        ("::ffff:192.0.2.1", "::ffff:c000:201"),
        ("64:ff9b::10.0.0.1", "64:ff9b::a00:1"),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
    ])
    func parses(text: String, canonical: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.description == canonical)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "256.0.0.1", "0001.0.0.1", "1.2.3.-4", "+1.2.3.4",
        " 1.2.3.4", "1.2.3.4 ", "１.2.3.4", "1.2.3.4/32",
        ":", ":::", "1::2::3", "::::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "fd00::zz", "g::1",
        "1.2.3.4::", "::1.2.3.4:5", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3", "fd00::1%eth0", "[::1]",
    ])
    func refuses(text: String) {
        #expect(IPAddress(text) == nil)
    }
}
