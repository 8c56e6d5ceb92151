//! Small MIME helpers shared by the builders and the classifier.
