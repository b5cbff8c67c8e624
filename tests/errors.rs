mod support;
#[tokio::test]
async fn placeholder() {}
