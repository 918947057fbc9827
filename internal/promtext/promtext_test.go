package promtext

import "testing"

func TestSamples(t *testing.T) {
	body := "# HELP a_total x\n# TYPE a_total counter\na_total{r=\"x y\"} 3\n\nb 1.5e-06\ngo_gc 7\n"
	got, err := Samples(body, "")
	if err != nil || len(got) != 3 || got[`a_total{r="x y"}`] != 3 || got["b"] != 1.5e-06 {
		t.Fatalf("Samples = %v, %v", got, err)
	}
	if got, _ := Samples(body, "a_"); len(got) != 1 {
		t.Fatalf("with a prefix: %v", got)
	}
	if _, err := Samples("a_total nope\n", ""); err == nil {
		t.Fatal("a bad value was accepted")
	}
	if _, err := Samples("novalue\n", ""); err == nil {
		t.Fatal("a sample without a value was accepted")
	}
}
