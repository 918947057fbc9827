package authz

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of the messages identityWire writes (envoy.service.auth.v3,
// envoy.config.core.v3, google.protobuf.Struct).
const (
	fieldCheckOk           protowire.Number = 3 // CheckResponse.ok_response
	fieldCheckMetadata     protowire.Number = 4 // CheckResponse.dynamic_metadata
	fieldOkHeaders         protowire.Number = 2 // OkHttpResponse.headers
	fieldOptionHeader      protowire.Number = 1 // HeaderValueOption.header
	fieldOptionAction      protowire.Number = 3 // HeaderValueOption.append_action
	fieldHeaderKey         protowire.Number = 1 // HeaderValue.key
	fieldHeaderValue       protowire.Number = 2 // HeaderValue.value
	fieldStructFields      protowire.Number = 1 // Struct.fields (map entries)
	fieldEntryKey          protowire.Number = 1 // map entry key
	fieldEntryValue        protowire.Number = 2 // map entry value
	fieldValueString       protowire.Number = 3 // Value.string_value
	overwriteIfExistsOrAdd                  = 2 // HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
)

// identityWire is the wire encoding of the part of an allowed answer that
// is the token's own: a CheckResponse with only the identity headers in
// its ok_response and only user, group and token_id in its dynamic
// metadata, as build sets them (see cachedAnswer). It is written directly,
// in one allocation, rather than built as messages and marshalled: it is
// what a check pays when its answer is not cached, so that a replica with
// more active tokens than cache.answers pays little for it
// (TestCachedAnswerIsBuilt holds it to build's answer).
func identityWire(user, group, tokenID string) []byte {
	headers := [3][2]string{{HeaderUser, user}, {HeaderGroup, group}, {HeaderTokenID, tokenID}}
	meta := [3][2]string{{"user", user}, {"group", group}, {"token_id", tokenID}}
	okLen, metaLen := 0, 0
	for _, h := range headers {
		okLen += lenFieldSize(fieldOkHeaders, optionSize(h[0], h[1]))
	}
	for _, m := range meta {
		metaLen += lenFieldSize(fieldStructFields, entrySize(m[0], m[1]))
	}
	b := make([]byte, 0, lenFieldSize(fieldCheckOk, okLen)+lenFieldSize(fieldCheckMetadata, metaLen))
	b = appendLen(b, fieldCheckOk, okLen)
	for _, h := range headers {
		b = appendLen(b, fieldOkHeaders, optionSize(h[0], h[1]))
		b = appendLen(b, fieldOptionHeader, headerSize(h[0], h[1]))
		b = appendString(b, fieldHeaderKey, h[0])
		b = appendString(b, fieldHeaderValue, h[1])
		b = protowire.AppendTag(b, fieldOptionAction, protowire.VarintType)
		b = protowire.AppendVarint(b, overwriteIfExistsOrAdd)
	}
	b = appendLen(b, fieldCheckMetadata, metaLen)
	for _, m := range meta {
		b = appendLen(b, fieldStructFields, entrySize(m[0], m[1]))
		b = appendString(b, fieldEntryKey, m[0])
		b = appendLen(b, fieldEntryValue, stringFieldSize(fieldValueString, m[1]))
		b = appendString(b, fieldValueString, m[1])
	}
	return b
}

func headerSize(name, value string) int {
	return stringFieldSize(fieldHeaderKey, name) + stringFieldSize(fieldHeaderValue, value)
}

func optionSize(name, value string) int {
	return lenFieldSize(fieldOptionHeader, headerSize(name, value)) +
		protowire.SizeTag(fieldOptionAction) + protowire.SizeVarint(overwriteIfExistsOrAdd)
}

func entrySize(key, value string) int {
	return stringFieldSize(fieldEntryKey, key) + lenFieldSize(fieldEntryValue, stringFieldSize(fieldValueString, value))
}

func stringFieldSize(num protowire.Number, s string) int { return lenFieldSize(num, len(s)) }

func lenFieldSize(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func appendLen(b []byte, num protowire.Number, n int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}
