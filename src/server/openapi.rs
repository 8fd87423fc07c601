//! The server API's OpenAPI 3.1 document, served at `/api/v1/openapi.json` (what
//! [`super::api`] answers, written down for clients and validators). Kept beside the handlers and
//! checked against them in `tests/api.rs` (each path answered as documented) and by a standard
//! validator in the node suite.
//!
//! Must not: drift from `api.rs`: a new endpoint there is a new path here.

use serde_json::{json, Value};

/// A room's name as the API takes it: `/` or nothing for the main room, else 1–48 characters of
/// `a-z 0-9 _ -`, not starting with `_` or `-` (`room.rs`), with or without a leading `/`.
const ROOM_PATTERN: &str = "^/?([a-z0-9][a-z0-9_-]{0,47})?$";

/// The document.
pub fn document() -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let retry = json!({ "$ref": "#/components/responses/Retry" });
    let id_param = json!({
        "name": "id", "in": "path", "required": true,
        "schema": { "type": "integer", "minimum": 1, "maximum": u64::MAX }
    });
    let room_param = json!({
        "name": "room", "in": "query", "required": false,
        "description": "The room's name; absent or `/`: the main room. A room `ROOMS` does not open is 404.",
        "schema": { "type": "string", "pattern": ROOM_PATTERN }
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "relay server API",
            "version": "1.0.0",
            "description": "Publish, read and delete a chat's messages and see who is in its rooms, from a community's backend. Every call needs `Authorization: Bearer <key>` (API_KEYS). Every error is `{\"error\": \"<reason>\"}`."
        },
        "servers": [{ "url": "/api/v1" }],
        "security": [{ "bearer": [] }],
        "paths": {
            "/messages": {
                "post": {
                    "summary": "Publish a message: stored once, ordered and delivered like a socket's.",
                    "operationId": "publishMessage",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Publish" } } }
                    },
                    "responses": {
                        "201": { "description": "Stored.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Published" } } } },
                        "200": { "description": "This idempotency key was stored before: nothing new.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Published" } } } },
                        "400": error, "401": error, "405": error, "429": retry, "404": error, "409": error, "413": error, "415": error, "422": error, "503": retry
                    }
                },
                "get": {
                    "summary": "A page of a room's messages, newest first.",
                    "operationId": "listMessages",
                    "parameters": [
                        room_param,
                        { "name": "before", "in": "query", "required": false, "description": "Only messages with a smaller id (the previous page's `before`).", "schema": { "type": "integer", "minimum": 1, "maximum": u64::MAX } },
                        { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } }
                    ],
                    "responses": {
                        "200": { "description": "The page.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Page" } } } },
                        "400": error, "401": error, "405": error, "429": retry, "404": error, "503": retry
                    }
                }
            },
            "/messages/{id}": {
                "delete": {
                    "summary": "Delete a message: an entry of the ordered log; every socket that had it is told, no read returns it again.",
                    "operationId": "deleteMessage",
                    "parameters": [id_param],
                    "responses": {
                        "200": { "description": "Deleted (now or before).", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["id", "deleted"],
                            "properties": { "id": { "type": "integer" }, "deleted": { "const": true } }
                        } } } },
                        "400": error, "401": error, "405": error, "429": retry, "404": error, "503": retry
                    }
                }
            },
            "/rooms": {
                "get": {
                    "summary": "The rooms that hold messages or people.",
                    "operationId": "listRooms",
                    "responses": {
                        "200": { "description": "The rooms, `/` first.", "content": { "application/json": { "schema": {
                            "type": "array",
                            "items": {
                                "type": "object", "required": ["room", "online", "last_id"],
                                "properties": {
                                    "room": { "type": "string" },
                                    "online": { "type": "integer", "minimum": 0 },
                                    "last_id": { "type": "integer", "minimum": 0 }
                                }
                            }
                        } } } },
                        "401": error, "405": error, "429": retry
                    }
                }
            },
            "/bans": {
                "get": {
                    "summary": "The bans in force.",
                    "operationId": "listBans",
                    "responses": {
                        "200": { "description": "The bans.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["bans"],
                            "properties": { "bans": { "type": "array", "items": { "$ref": "#/components/schemas/Ban" } } }
                        } } } },
                        "401": error, "405": error, "429": retry, "503": retry
                    }
                },
                "post": {
                    "summary": "Ban a user or an address: their sockets end within a second on every node, their CONNECTs are refused.",
                    "operationId": "addBan",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": {
                            "type": "object", "additionalProperties": false,
                            "properties": {
                                "user": { "type": ["string", "null"], "minLength": 1, "maxLength": 128, "description": "A verified user id (a token's sub): at most 128 UTF-8 bytes. At least one of `user` and `ip`." },
                                "ip": { "type": ["string", "null"], "description": "An address or a CIDR block (`203.0.113.7`, `2001:db8::/48`)." },
                                "seconds": { "type": "integer", "minimum": 1, "maximum": 315360000, "description": "Absent: for good." },
                                "reason": { "type": ["string", "null"], "maxLength": 500 }
                            }
                        } } }
                    },
                    "responses": {
                        "201": { "description": "In force.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["id"], "properties": { "id": { "type": "integer" } }
                        } } } },
                        "400": error, "401": error, "405": error, "429": retry, "413": error, "415": error, "503": retry
                    }
                }
            },
            "/bans/{id}": {
                "delete": {
                    "summary": "Lift a ban.",
                    "operationId": "liftBan",
                    "parameters": [id_param],
                    "responses": {
                        "200": { "description": "Lifted.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["id", "lifted"],
                            "properties": { "id": { "type": "integer" }, "lifted": { "const": true } }
                        } } } },
                        "400": error, "401": error, "405": error, "429": retry, "404": error, "503": retry
                    }
                }
            },
            "/disconnect": {
                "post": {
                    "summary": "End the sockets of a user or an address, on every node (they may connect again).",
                    "operationId": "disconnect",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": {
                            "type": "object", "additionalProperties": false,
                            "properties": { "user": { "type": ["string", "null"], "minLength": 1, "maxLength": 128 }, "ip": { "type": ["string", "null"], "description": "An address or a CIDR block. At least one of `user` and `ip`." } }
                        } } }
                    },
                    "responses": {
                        "200": { "description": "Told; `disconnected` counts this node's connections.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["disconnected"],
                            "properties": { "disconnected": { "type": "integer", "minimum": 0 } }
                        } } } },
                        "400": error, "401": error, "405": error, "429": retry, "413": error, "415": error
                    }
                }
            },
            "/presence": {
                "get": {
                    "summary": "Who is in a room now.",
                    "operationId": "getPresence",
                    "parameters": [room_param],
                    "responses": {
                        "200": { "description": "The room's people (at most 200 listed; `online` exact).", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["online", "users"],
                            "properties": {
                                "online": { "type": "integer", "minimum": 0 },
                                "users": { "type": "array", "items": { "$ref": "#/components/schemas/Person" } }
                            }
                        } } } },
                        "400": error, "401": error, "405": error, "429": retry, "404": error
                    }
                }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": {
                    "description": "The call was refused; `error` says why.",
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error"],
                        "properties": { "error": { "type": "string" } }
                    } } }
                },
                "Retry": {
                    "description": "Not now (429: this key's API_MAX_REQUESTS_PER_SECOND, or this address sent 20 calls with a missing or wrong key and may send one a second, whatever its key; 503: the database did not answer within DB_TIMEOUT_MS): try again after `Retry-After` seconds. `error` says why.",
                    "headers": { "Retry-After": { "required": true, "schema": { "type": "integer", "minimum": 1 } } },
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error"],
                        "properties": { "error": { "type": "string" } }
                    } } }
                }
            },
            "schemas": {
                "Publish": {
                    "type": "object",
                    "required": ["content", "idempotency_key"],
                    "additionalProperties": false,
                    "properties": {
                        "room": { "type": ["string", "null"], "pattern": ROOM_PATTERN, "description": "Absent or null: the main room `/`." },
                        "content": { "type": "string", "description": "At most MAX_MESSAGE_BYTES bytes of UTF-8." },
                        "idempotency_key": { "type": "string", "minLength": 1, "maxLength": 245, "description": "One message's key: a retry with it (the same room, content, user and name) answers 200 with the message stored; the key with anything else is refused with 422." },
                        "user": { "type": ["string", "null"], "minLength": 1, "maxLength": 128, "description": "The author's user id: at most 128 UTF-8 bytes. Absent or null: none." },
                        "name": { "type": ["string", "null"], "maxLength": 64, "description": "The author's display name, without control or format characters; trimmed of white space and of the characters that show as nothing (as a guest's name is). Absent, null or blank: none." }
                    }
                },
                "Published": {
                    "type": "object", "required": ["id"],
                    "properties": { "id": { "type": "integer" }, "duplicate": { "const": true }, "deleted": { "const": true, "description": "On a duplicate: the message stored under the key was deleted since (its content is gone, so only its room and author were compared)." } }
                },
                "Message": {
                    "type": "object",
                    "required": ["id", "room", "content", "user", "name", "at"],
                    "properties": {
                        "id": { "type": "integer" },
                        "room": { "type": "string" },
                        "content": { "type": "string" },
                        "user": { "type": ["string", "null"] },
                        "name": { "type": ["string", "null"] },
                        "at": { "type": "integer", "description": "Commit time, ms since the epoch (0: unknown)." }
                    }
                },
                "Page": {
                    "type": "object", "required": ["messages", "before"],
                    "properties": {
                        "messages": { "type": "array", "items": { "$ref": "#/components/schemas/Message" } },
                        "before": { "type": ["integer", "null"], "description": "The next page's `before`; null: no more. A page ends at `limit` messages or once they pass 1 MiB of JSON, whichever comes first." }
                    }
                },
                "Ban": {
                    "type": "object", "required": ["id", "user", "ip", "reason", "created_at", "expires_at"],
                    "properties": {
                        "id": { "type": "integer" },
                        "user": { "type": ["string", "null"] },
                        "ip": { "type": ["string", "null"], "description": "CIDR form." },
                        "reason": { "type": ["string", "null"] },
                        "created_at": { "type": "integer" },
                        "expires_at": { "type": ["integer", "null"], "description": "ms since the epoch; null: for good." }
                    }
                },
                "Person": {
                    "type": "object", "required": ["id", "user", "name", "guest"],
                    "properties": {
                        "id": { "type": "string" },
                        "user": { "type": ["string", "null"] },
                        "name": { "type": ["string", "null"] },
                        "guest": { "type": "boolean" }
                    }
                }
            }
        }
    })
}
