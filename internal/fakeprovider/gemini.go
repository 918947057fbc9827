package fakeprovider

import (
	"fmt"
	"net/http"
	"strings"
)

type geminiPart struct {
	Text string `json:"text"`
}

type geminiContent struct {
	Parts []geminiPart `json:"parts"`
	Role  string       `json:"role"`
}

type geminiCandidate struct {
	Content      geminiContent `json:"content"`
	FinishReason string        `json:"finishReason,omitempty"`
	Index        int           `json:"index"`
}

type geminiUsage struct {
	PromptTokenCount     int `json:"promptTokenCount"`
	CandidatesTokenCount int `json:"candidatesTokenCount"`
	TotalTokenCount      int `json:"totalTokenCount"`
}

type geminiResponse struct {
	Candidates    []geminiCandidate `json:"candidates"`
	UsageMetadata *geminiUsage      `json:"usageMetadata,omitempty"`
	ModelVersion  string            `json:"modelVersion"`
	ResponseID    string            `json:"responseId"`
}

type geminiError struct {
	Error geminiErrorBody `json:"error"`
}

type geminiErrorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
}

func writeGeminiError(w http.ResponseWriter, status int, statusName, msg string) {
	writeJSON(w, status, geminiError{Error: geminiErrorBody{Code: status, Message: msg, Status: statusName}})
}

// gemini serves POST /v1beta/models/{model}:generateContent and
// :streamGenerateContent (and the same under /v1/).
// geminiStream is the reply in streamed pieces, made by chunk; the last
// says STOP and carries the usage.
func geminiStream(chunk func(text, finish string, u *geminiUsage) geminiResponse, usage *geminiUsage) []geminiResponse {
	pieces := replyPieces()
	chunks := make([]geminiResponse, len(pieces))
	for i, p := range pieces {
		chunks[i] = chunk(p, "", nil)
	}
	last := &chunks[len(chunks)-1]
	last.Candidates[0].FinishReason = "STOP"
	last.UsageMetadata = usage
	return chunks
}

func (s *Server) gemini(w http.ResponseWriter, r *http.Request) {
	model, action, ok := strings.Cut(r.PathValue("modelAction"), ":")
	if !ok || model == "" || (action != "generateContent" && action != "streamGenerateContent") {
		writeGeminiError(w, http.StatusNotFound, "NOT_FOUND",
			fmt.Sprintf("unknown method %q for model %q", action, model))
		return
	}
	var req struct{}
	body, err := decodeBody(r, &req)
	if err != nil {
		writeGeminiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error())
		return
	}
	usage := geminiUsage{PromptTokenCount: promptTokens(body), CandidatesTokenCount: completionTokens()}
	usage.TotalTokenCount = usage.PromptTokenCount + usage.CandidatesTokenCount
	id := s.nextID("resp-")
	chunk := func(text, finish string, u *geminiUsage) geminiResponse {
		return geminiResponse{
			Candidates: []geminiCandidate{{
				Content:      geminiContent{Parts: []geminiPart{{Text: text}}, Role: "model"},
				FinishReason: finish,
			}},
			UsageMetadata: u,
			ModelVersion:  model,
			ResponseID:    id,
		}
	}

	if action == "generateContent" {
		writeJSON(w, http.StatusOK, chunk(Reply, "STOP", &usage))
		return
	}
	chunks := geminiStream(chunk, &usage)
	if r.URL.Query().Get("alt") != "sse" {
		// Without alt=sse Gemini streams one JSON array of responses.
		writeJSON(w, http.StatusOK, chunks)
		return
	}
	sse := newSSEWriter(w)
	for _, c := range chunks {
		if err := sse.event("", c); err != nil {
			return
		}
	}
}
